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
    "Objective": "toolkit.interfaces",
    "ObjectiveOutput": "toolkit.interfaces",
    "Projector": "toolkit.interfaces",
    "hookimpl": "toolkit.hookspecs",
    "hookspec": "toolkit.hookspecs",
    "load_encoder": "toolkit.export",
    "load_eval_transform": "toolkit.export",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from toolkit.export import load_encoder, load_eval_transform
    from toolkit.hookspecs import hookimpl, hookspec
    from toolkit.interfaces import (
        Augmentation,
        Batch,
        DataSource,
        Encoder,
        EvalContext,
        Evaluator,
        Objective,
        ObjectiveOutput,
        Projector,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
