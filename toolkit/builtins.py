"""The core's own plugin: generic projectors, evaluators and optimizers.

Declared as the ``core`` entry point in ``pyproject.toml`` and discovered like any plugin, so
it can be blocked (``SELFSUP_DISABLE_PLUGINS=core``) or replaced.
"""

from __future__ import annotations

from toolkit.evaluation import KNNEvaluator, LinearProbeEvaluator
from toolkit.hookspecs import Register, hookimpl
from toolkit.optim import adamw, lars, sgd
from toolkit.projectors import IdentityProjector, MLPProjector


@hookimpl
def register_projectors(register: Register) -> None:
    register("identity", IdentityProjector)
    register("mlp", MLPProjector)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("knn", KNNEvaluator)
    register("linear-probe", LinearProbeEvaluator)


@hookimpl
def register_optimizers(register: Register) -> None:
    register("sgd", sgd)
    register("adamw", adamw)
    register("lars", lars)
