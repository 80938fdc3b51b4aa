"""Logs a run to MLflow, in a local file store under ``RUN_DIR/mlruns/``: a tracker made of lifecycle hooks.

Off unless asked for: active when ``SELFSUP_MLFLOW=1`` is set and MLflow is installed (``pip
install selfsup-toolkit[mlflow]``, the ``mlflow-skinny`` client; enabled without it, a run says
so in one line and trains on). ``MLFLOW_TRACKING_URI`` sends it to a server or database instead,
``MLFLOW_EXPERIMENT_NAME`` names the experiment (default ``selfsup``). See the store with
``mlflow ui --backend-store-uri RUN_DIR/mlruns``. A resumed run logs to the same MLflow run (its
id is kept in ``RUN_DIR/mlflow-run-id``).

Logged: the resolved recipe as parameters (``optimizer.lr``, ...), ``train/<metric>`` at every
optimizer step, ``eval/<metric>`` at every evaluation, the run's status at the end: ``FINISHED``, ``KILLED``
after a stop (SIGTERM, Ctrl-C; ``RUNNING`` again on resume) or ``FAILED``. Everything
goes through an ``MlflowClient`` of its own: nothing process-wide (``mlflow.set_tracking_uri``,
an active run) changes. Declared as the entry point ``mlflow = "selfsup_mlflow.plugin:logger"``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from toolkit import RunContext, TrainingInterrupted, hookimpl
from toolkit.extras import MissingExtra, require
from toolkit.plugins import env_flag
from toolkit.recipe import flatten

SWITCH = "SELFSUP_MLFLOW"
PARAMS_PER_CALL = 100
"""MLflow's limit on parameters per ``log_batch``."""
PARAM_LENGTH = 500


@dataclass
class _Tracked:
    client: Any
    run_id: str


class MlflowLogger:
    """One MLflow run per selfsup run directory, open from ``on_train_start`` to ``on_train_end``
    (or ``on_train_exception``)."""

    def __init__(self) -> None:
        self._runs: dict[Path, _Tracked] = {}

    @hookimpl
    def on_train_start(self, run: RunContext) -> None:
        if not env_flag(SWITCH):
            return
        try:
            tracking = require("mlflow.tracking", f"the MLflow tracker ({SWITCH}=1)")
        except MissingExtra as missing:
            print(f"warning: {missing}; training without it", file=sys.stderr)
            return
        run_dir = Path(run.run_dir)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "selfsup")
        id_file = run_dir / "mlflow-run-id"
        with _file_store_allowed():
            client = tracking.MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
            if id_file.is_file():
                run_id = id_file.read_text(encoding="utf-8").strip()
                client.update_run(run_id, status="RUNNING")
            else:
                run_id = client.create_run(experiment_id, run_name=run.recipe["name"],
                                           tags={"selfsup.run_dir": str(run_dir.resolve())}).info.run_id
                id_file.write_text(run_id + "\n", encoding="utf-8")
                self._log_params(client, run_id, run.recipe)  # parameters are fixed once logged: not on a resume
        self._runs[run_dir] = _Tracked(client, run_id)

    @hookimpl
    def on_step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self._log(run, "train", step, metrics)

    @hookimpl
    def on_eval_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self._log(run, "eval", step, metrics)

    @hookimpl
    def on_train_end(self, run: RunContext, metrics: dict[str, float]) -> None:
        self._terminate(run, "FINISHED")

    @hookimpl
    def on_train_exception(self, run: RunContext, exception: BaseException) -> None:
        stopped = isinstance(exception, (TrainingInterrupted, KeyboardInterrupt))
        self._terminate(run, "KILLED" if stopped else "FAILED")

    def _terminate(self, run: RunContext, status: str) -> None:
        tracked = self._runs.pop(Path(run.run_dir), None)
        if tracked is not None:
            with _file_store_allowed():
                tracked.client.set_terminated(tracked.run_id, status=status)

    def _log(self, run: RunContext, prefix: str, step: int, metrics: dict[str, float]) -> None:
        tracked = self._runs.get(Path(run.run_dir))  # None: not enabled, or an evaluation outside training
        if tracked is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with _file_store_allowed():
            tracked.client.log_batch(tracked.run_id, metrics=[Metric(f"{prefix}/{key}", float(value), now, step)
                                                              for key, value in metrics.items()])

    @staticmethod
    def _log_params(client: Any, run_id: str, recipe: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)[:PARAM_LENGTH]) for key, value in flatten(recipe).items()]
        for start in range(0, len(params), PARAMS_PER_CALL):
            client.log_batch(run_id, params=params[start:start + PARAMS_PER_CALL])


@contextlib.contextmanager
def _file_store_allowed() -> Iterator[None]:
    """MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it prefers a
    database, which needs SQLAlchemy, not part of mlflow-skinny), and looks each time the client
    reaches its store: allow it around this plugin's calls only, then put the environment back."""
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if before is None:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


logger = MlflowLogger()
