"""Loading pretrained weights from a local file into an encoder, for its ``weights:`` parameter.

Nothing is ever downloaded: a recipe names a state dict file saved beforehand (``torch.save`` of
a ``state_dict()``, or ``.safetensors``); only tensors are unpickled (``weights_only``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn


def read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """The tensors in ``path`` (``.safetensors`` or a torch file); errors name ``encoder.weights``
    and ``what`` the file should be (``"a torchvision ResNet state dict"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder.weights: {path} does not exist ({what})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise their own errors for damaged files
        raise OSError(f"encoder.weights: {path} is not a readable state dict ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise OSError(f"encoder.weights: {path} holds a {type(state).__name__}, not a state dict ({what})")
    return state


def load_weights(module: nn.Module, state: Mapping[str, Tensor], path: Path, name: str, drop: tuple[str, ...] = (),
                 hint: str = "") -> None:
    """Load ``state`` (read from ``path``) into ``module`` (a ``name``) strictly, except keys starting
    with one of ``drop`` (a classifier head); a mismatch raises ``ValueError`` naming
    ``encoder.weights``, the first differing keys or shapes and ``hint`` (what to check)."""
    kept = {key: value for key, value in state.items() if not key.startswith(drop)} if drop else dict(state)
    try:
        missing, unexpected = module.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"encoder.weights: {path} does not fit this {name}; {hint} "
                         f"({str(error).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise ValueError(f"encoder.weights: {path} does not fit this {name} (missing "
                         f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}); {hint}")
