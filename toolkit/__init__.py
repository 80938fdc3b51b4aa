"""selfsup: plugin-based, multimodal self-supervised representation learning.

The public API: training, evaluating, embedding and reporting from Python (``toolkit.train``,
``toolkit.evaluate``, ``toolkit.embed``, ``toolkit.report``: what the ``selfsup`` commands do);
the component interfaces and plugin markers, the building blocks plugins share, the errors, and
loading exported encoders.
Attributes are imported on first use (PEP 562), so ``import toolkit`` and ``selfsup --help``
do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "toolkit.api": ("Run", "embed", "evaluate", "report", "train"),
    "toolkit.embedding": ("Embeddings",),
    "toolkit.interfaces": ("Augmentation", "Batch", "DataSource", "Encoder", "EvalContext", "Evaluator",
                           "NotEvaluable", "Objective", "ObjectiveOutput", "Projector", "RunContext", "pool"),
    "toolkit.hookspecs": ("Register", "hookimpl", "hookspec"),
    "toolkit.compatibility": ("Contract", "declare"),
    "toolkit.errors": ("DataError", "PluginError", "RecipeError", "SelfsupError", "TrainingError",
                       "TrainingInterrupted"),
    "toolkit.views": ("concat_views", "embed_views", "forward_runs", "prediction_pairs"),
    "toolkit.momentum": ("MomentumTarget", "cosine_momentum", "ema_update"),
    "toolkit.memory": ("KeyQueue", "MemoryBank"),
    "toolkit.distributed": ("all_gather", "broadcast_from_main", "gather_with_grad"),
    "toolkit.losses": ("info_nce", "negative_cosine", "normalized_mse", "nt_xent", "supervised_nt_xent"),
    "toolkit.data": ("seeded_uniforms",),
    "toolkit.weights": ("load_weights", "read_state_dict"),
    "toolkit.export": ("load_encoder", "load_eval_transform"),
}
_EXPORTS = {name: module for module, names in _PUBLIC.items() for name in names}
"""What plugin authors and users import from ``toolkit``: the Python API (train, evaluate, embed,
report and the :class:`~toolkit.api.Run` they describe), the interfaces and hook markers, the
building blocks methods share (multi-view encoding, EMA targets, queues and memory banks, gathers
across processes, losses), the errors, and loading exported encoders (``docs/plugins.md``)."""

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from toolkit.api import Run, embed, evaluate, report, train  # noqa: F401
    from toolkit.embedding import Embeddings  # noqa: F401
    from toolkit.interfaces import (Augmentation, Batch, DataSource, Encoder, EvalContext,  # noqa: F401
                                    Evaluator, NotEvaluable, Objective, ObjectiveOutput, Projector, RunContext, pool)
    from toolkit.hookspecs import Register, hookimpl, hookspec  # noqa: F401
    from toolkit.compatibility import Contract, declare  # noqa: F401
    from toolkit.errors import (DataError, PluginError, RecipeError, SelfsupError, TrainingError,  # noqa: F401
                                TrainingInterrupted)  # noqa: F401
    from toolkit.views import concat_views, embed_views, forward_runs, prediction_pairs  # noqa: F401
    from toolkit.momentum import MomentumTarget, cosine_momentum, ema_update  # noqa: F401
    from toolkit.memory import KeyQueue, MemoryBank  # noqa: F401
    from toolkit.distributed import all_gather, broadcast_from_main, gather_with_grad  # noqa: F401
    from toolkit.losses import info_nce, negative_cosine, normalized_mse, nt_xent, supervised_nt_xent  # noqa: F401
    from toolkit.data import seeded_uniforms  # noqa: F401
    from toolkit.weights import load_weights, read_state_dict  # noqa: F401
    from toolkit.export import load_encoder, load_eval_transform  # noqa: F401

def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
