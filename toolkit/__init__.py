"""selfsup: plugin-based, multimodal self-supervised representation learning.

The public API: the component interfaces, the plugin markers, and loading exported encoders.
"""

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

__version__ = "0.1.0"

__all__ = [
    "Augmentation",
    "Batch",
    "DataSource",
    "Encoder",
    "EvalContext",
    "Evaluator",
    "Objective",
    "ObjectiveOutput",
    "Projector",
    "hookimpl",
    "hookspec",
    "load_encoder",
    "load_eval_transform",
]
