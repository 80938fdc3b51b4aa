"""Logs every run's training and evaluation metrics to ``RUN_DIR/tensorboard``.

Active when the ``tensorboard`` package is installed (``pip install selfsup-toolkit[tensorboard]``);
otherwise its hooks do nothing. Block it with ``SELFSUP_DISABLE_PLUGINS=tensorboard``.
Declared as the entry point ``tensorboard = "selfsup_tensorboard.plugin:logger"``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from toolkit import RunContext, hookimpl


class TensorBoardLogger:
    """Scalars ``train/<metric>`` at every optimizer step and ``eval/<metric>`` at every
    evaluation, one event file per run directory (a resumed run appends a new one)."""

    def __init__(self) -> None:
        self._writers: dict[Path, Any] = {}

    @hookimpl
    def on_train_start(self, run: RunContext) -> None:
        self._writer(run)

    @hookimpl
    def on_step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self._log(run, "train", step, metrics)

    @hookimpl
    def on_eval_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self._log(run, "eval", step, metrics)
        writer = self._writer(run)
        if writer is not None:
            writer.flush()

    @hookimpl
    def on_train_end(self, run: RunContext, metrics: dict[str, float]) -> None:
        self._close(run)

    @hookimpl
    def on_train_exception(self, run: RunContext, exception: BaseException) -> None:
        self._close(run)  # what was logged up to the failure reaches the event file

    def _close(self, run: RunContext) -> None:
        writer = self._writers.pop(Path(run.run_dir), None)
        if writer is not None:
            writer.close()

    def _log(self, run: RunContext, prefix: str, step: int, metrics: dict[str, float]) -> None:
        writer = self._writer(run)
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"{prefix}/{key}", value, step)

    def _writer(self, run: RunContext) -> Any:
        run_dir = Path(run.run_dir)
        if run_dir not in self._writers:
            if importlib.util.find_spec("tensorboard") is None:
                self._writers[run_dir] = None
            else:
                from torch.utils.tensorboard import SummaryWriter

                self._writers[run_dir] = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        return self._writers[run_dir]


logger = TensorBoardLogger()
