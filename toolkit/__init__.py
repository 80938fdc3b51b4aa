"""selfsup: plugin-based, multimodal self-supervised representation learning.

The public API: the component interfaces, the plugin markers, and loading exported encoders.
Attributes are imported on first use (PEP 562), so ``import toolkit`` and ``selfsup --help``
do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Augmentation": "toolkit.interfaces",
    "Batch": "toolkit.interfaces",
    "DataSource": "toolkit.interfaces",
    "Encoder": "toolkit.interfaces",
    "EvalContext": "toolkit.interfaces",
    "Evaluator": "toolkit.interfaces",
    "NotEvaluable": "toolkit.interfaces",
    "Objective": "toolkit.interfaces",
    "ObjectiveOutput": "toolkit.interfaces",
    "Projector": "toolkit.interfaces",
    "RunContext": "toolkit.interfaces",
    "pool": "toolkit.interfaces",
    "Register": "toolkit.hookspecs",
    "hookimpl": "toolkit.hookspecs",
    "hookspec": "toolkit.hookspecs",
    "Contract": "toolkit.compatibility",
    "declare": "toolkit.compatibility",
    "DataError": "toolkit.errors",
    "PluginError": "toolkit.errors",
    "RecipeError": "toolkit.errors",
    "SelfsupError": "toolkit.errors",
    "TrainingError": "toolkit.errors",
    "concat_views": "toolkit.views",
    "embed_views": "toolkit.views",
    "forward_runs": "toolkit.views",
    "prediction_pairs": "toolkit.views",
    "MomentumTarget": "toolkit.momentum",
    "cosine_momentum": "toolkit.momentum",
    "ema_update": "toolkit.momentum",
    "KeyQueue": "toolkit.memory",
    "MemoryBank": "toolkit.memory",
    "all_gather": "toolkit.distributed",
    "broadcast_from_main": "toolkit.distributed",
    "gather_with_grad": "toolkit.distributed",
    "info_nce": "toolkit.losses",
    "negative_cosine": "toolkit.losses",
    "normalized_mse": "toolkit.losses",
    "nt_xent": "toolkit.losses",
    "supervised_nt_xent": "toolkit.losses",
    "seeded_uniforms": "toolkit.data",
    "load_encoder": "toolkit.export",
    "load_eval_transform": "toolkit.export",
}
"""What plugin authors and users import from ``toolkit``: the interfaces and hook markers, the
building blocks methods share (multi-view encoding, EMA targets, queues and memory banks, gathers
across processes, losses), the errors, and loading exported encoders (``docs/plugins.md``)."""

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from toolkit.interfaces import Augmentation, Batch, DataSource, Encoder, EvalContext, Evaluator, NotEvaluable, Objective, ObjectiveOutput, Projector, RunContext, pool  # noqa: F401
    from toolkit.hookspecs import Register, hookimpl, hookspec  # noqa: F401
    from toolkit.compatibility import Contract, declare  # noqa: F401
    from toolkit.errors import DataError, PluginError, RecipeError, SelfsupError, TrainingError  # noqa: F401
    from toolkit.views import concat_views, embed_views, forward_runs, prediction_pairs  # noqa: F401
    from toolkit.momentum import MomentumTarget, cosine_momentum, ema_update  # noqa: F401
    from toolkit.memory import KeyQueue, MemoryBank  # noqa: F401
    from toolkit.distributed import all_gather, broadcast_from_main, gather_with_grad  # noqa: F401
    from toolkit.losses import info_nce, negative_cosine, normalized_mse, nt_xent, supervised_nt_xent  # noqa: F401
    from toolkit.data import seeded_uniforms  # noqa: F401
    from toolkit.export import load_encoder, load_eval_transform  # noqa: F401

def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
