"""Atomic checkpoints and the random state they carry.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one, so a crash or kill at any moment leaves either the previous checkpoint or the
new one, never a truncated file. Loading uses ``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from toolkit.errors import TrainingError
from toolkit.rundir import writing


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that ``path`` is always a complete checkpoint."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temporary, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def non_finite(state: dict[str, Any], prefix: str = "") -> list[str]:
    """The names of the floating-point tensors in a (nested) state dict that hold NaN or infinity."""
    found = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found += non_finite(value, f"{name}.")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            found.append(name)
    return found


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}: the run never reached its first checkpoint "
                                f"(trainer.checkpoint_every); `selfsup train --resume {path.parent.parent}` "
                                f"starts it from step 0")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainingError(f"checkpoint {path} cannot be read ({error}); it was not written by selfsup "
                           f"or the disk is damaged") from error


def capture_rng() -> dict[str, Any]:
    """Every random generator the training step may draw from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run a block (an evaluation, say) without moving any random generator the training uses."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
