"""Logs every run's training and evaluation metrics to ``RUN_DIR/tensorboard``.

Active when the ``tensorboard`` package is installed (``pip install selfsup-toolkit[tensorboard]``);
otherwise its hooks do nothing. Block it with ``SELFSUP_DISABLE_PLUGINS=tensorboard``.
Declared as the entry point ``tensorboard = "selfsup_tensorboard.plugin:logger"``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from toolkit import hookimpl


class TensorBoardLogger:
    """Scalars ``train/<metric>`` at every optimizer step and ``eval/<metric>`` at every
    evaluation, one event file per run directory (a resumed run appends a new one)."""

    def __init__(self) -> None:
        self._writers: dict[Path, Any] = {}

    @hookimpl
    def on_train_start(self, trainer: Any) -> None:
        self._writer(trainer)

    @hookimpl
    def on_step_end(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        self._log(trainer, "train", step, metrics)

    @hookimpl
    def on_eval_end(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        self._log(trainer, "eval", step, metrics)
        writer = self._writer(trainer)
        if writer is not None:
            writer.flush()

    @hookimpl
    def on_train_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        writer = self._writers.pop(Path(trainer.run_dir), None)
        if writer is not None:
            writer.close()

    def _log(self, trainer: Any, prefix: str, step: int, metrics: dict[str, float]) -> None:
        writer = self._writer(trainer)
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"{prefix}/{key}", value, step)

    def _writer(self, trainer: Any) -> Any:
        run_dir = Path(trainer.run_dir)
        if run_dir not in self._writers:
            if importlib.util.find_spec("tensorboard") is None:
                self._writers[run_dir] = None
            else:
                from torch.utils.tensorboard import SummaryWriter

                self._writers[run_dir] = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        return self._writers[run_dir]


logger = TensorBoardLogger()
