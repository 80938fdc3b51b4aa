"""The core's own plugin: generic projectors and evaluators.

Declared as the ``core`` entry point in ``pyproject.toml`` and discovered like any plugin, so
it can be blocked (``SELFSUP_DISABLE_PLUGINS=core``) or replaced.
"""

from __future__ import annotations

from toolkit.evaluation import KNNEvaluator, LinearProbeEvaluator
from toolkit.hookspecs import Register, hookimpl
from toolkit.projectors import IdentityProjector, MLPProjector


@hookimpl
def register_projectors(register: Register) -> None:
    register("identity", IdentityProjector)
    register("mlp", MLPProjector)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("knn", KNNEvaluator)
    register("linear-probe", LinearProbeEvaluator)
