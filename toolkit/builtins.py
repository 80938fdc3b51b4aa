"""The core's own plugin: generic projectors, evaluators and optimizers, and the report's fallback view of items.

Declared as the ``core`` entry point in ``pyproject.toml`` and discovered like any plugin, so
it can be blocked (``SELFSUP_DISABLE_PLUGINS=core``) or replaced.
"""

from __future__ import annotations

from typing import Any

from toolkit.evaluation import KNNEvaluator, LinearProbeEvaluator
from toolkit.hookspecs import Register, hookimpl
from toolkit.interfaces import DataSource
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


@hookimpl(trylast=True)
def render_items(source: DataSource, indices: list[int]) -> list[str] | None:
    """Items no modality plugin renders: uint8 images ``(C, H, W)`` as thumbnails, strings as
    text (:func:`toolkit.reporting.render_generic`); ``None`` when none of them is either."""
    from toolkit.reporting import render_generic

    shown: list[Any] = [render_generic(source[i]) for i in indices]
    return None if all(part is None for part in shown) else [part or "" for part in shown]
