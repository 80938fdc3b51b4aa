"""Logs a run to Weights & Biases, offline, under ``RUN_DIR/wandb/``: a tracker made of lifecycle hooks.

Off unless asked for, so that installing wandb does not send every run of every user anywhere:
it is active when ``SELFSUP_WANDB=1`` is set (in the shell, or ``os.environ`` in a notebook
before training) and wandb is installed (``pip install selfsup-toolkit[wandb]``; enabled without
it, a run says so in one line and trains on). It writes offline unless ``WANDB_MODE`` says
otherwise; ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads later. ``WANDB_PROJECT`` names the
project (default ``selfsup``). A resumed run logs to the same wandb run (its id is kept in
``RUN_DIR/wandb/run-id``).

Logged: the resolved recipe as the config, ``train/<metric>`` at every optimizer step,
``eval/<metric>`` at every evaluation, ``final/<metric>`` in the summary. A run that stops
early is finished with a non-zero exit code (130 after a stop or Ctrl-C, 1 after a failure), so
wandb marks it failed rather than leaving it running; a resume continues it.
Declared as the entry point ``wandb = "selfsup_wandb.plugin:logger"``.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from toolkit import RunContext, TrainingInterrupted, hookimpl
from toolkit.extras import MissingExtra, require
from toolkit.plugins import env_flag

SWITCH = "SELFSUP_WANDB"


class WandbLogger:
    """One wandb run per selfsup run directory, open from ``on_train_start`` to ``on_train_end``
    (or ``on_train_exception``)."""

    def __init__(self) -> None:
        self._runs: dict[Path, Any] = {}

    @hookimpl
    def on_train_start(self, run: RunContext) -> None:
        if not env_flag(SWITCH):
            return
        try:
            wandb = require("wandb", f"the wandb tracker ({SWITCH}=1)")
        except MissingExtra as missing:
            print(f"warning: {missing}; training without it", file=sys.stderr)
            return
        directory = Path(run.run_dir) / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        id_file = directory / "run-id"
        if not id_file.is_file():
            id_file.write_text(secrets.token_hex(4) + "\n", encoding="utf-8")  # 8 characters of [0-9a-f]
        self._runs[Path(run.run_dir)] = wandb.init(
            dir=str(run.run_dir), mode=os.environ.get("WANDB_MODE", "offline"),
            project=os.environ.get("WANDB_PROJECT", "selfsup"), name=run.recipe["name"],
            id=id_file.read_text(encoding="utf-8").strip(), resume="allow", config=run.recipe,
            reinit="create_new", settings=wandb.Settings(console="off", silent=True))

    @hookimpl
    def on_step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self._log(run, "train", step, metrics)

    @hookimpl
    def on_eval_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self._log(run, "eval", step, metrics)

    @hookimpl
    def on_train_end(self, run: RunContext, metrics: dict[str, float]) -> None:
        tracked = self._runs.pop(Path(run.run_dir), None)
        if tracked is not None:
            tracked.summary.update({f"final/{key}": value for key, value in metrics.items()})
            tracked.finish()

    @hookimpl
    def on_train_exception(self, run: RunContext, exception: BaseException) -> None:
        tracked = self._runs.pop(Path(run.run_dir), None)
        if tracked is not None:
            tracked.finish(exit_code=130 if isinstance(exception, (TrainingInterrupted, KeyboardInterrupt)) else 1)

    def _log(self, run: RunContext, prefix: str, step: int, metrics: dict[str, float]) -> None:
        tracked = self._runs.get(Path(run.run_dir))  # None: not enabled, or an evaluation outside training
        if tracked is not None:
            tracked.log({f"{prefix}/{key}": value for key, value in metrics.items()}, step=step)


logger = WandbLogger()
