"""Optional dependencies by modality: ``pip install selfsup-toolkit[text|audio|video|all]``.

The core (and the image plugin) needs only torch, torchvision and a few small libraries; the
text, audio and video components import their libraries when they are built, through
:func:`require`, so a missing one is an error that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from toolkit.errors import SelfsupError

EXTRAS: dict[str, str] = {
    "transformers": "text",
    "datasets": "text",
    "torchaudio": "audio",
    "soundfile": "audio",
    "av": "video",
    "timm": "vit",
    "matplotlib": "report",
    "sklearn": "report",
    "wandb": "wandb",
    "mlflow": "mlflow",
}
"""The extra that installs each optional library."""


class MissingExtra(SelfsupError, ModuleNotFoundError):
    """An optional library a component needs is not installed; the message names the extra."""

    exit_status = 1  # the recipe is fine; this environment lacks a library


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` (``"torchaudio.functional"``) or raise :class:`MissingExtra` naming the
    extra that installs it. An installed library that fails to import (a broken build) raises
    its own error unchanged."""
    root = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.partition(".")[0] != root:
            raise
        extra = EXTRAS.get(root, "all")
        raise MissingExtra(f"{needed_for} needs {root}, which is not installed: pip install "
                           f"'selfsup-toolkit[{extra}]' (or [all])", name=root) from None
