"""The built-in MLflow tracker: off by default, a file store under the run directory when on."""

from __future__ import annotations

import os

import pytest
import yaml

from helpers import kill_at, make_trainer

pytest.importorskip("mlflow", reason="mlflow is not installed (pip install selfsup-toolkit[mlflow])")


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setenv("SELFSUP_MLFLOW", "1")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)


def metric(run_folder, key):
    """``[(step, value)]`` of one metric file of the MLflow file store (lines ``timestamp value step``)."""
    lines = (run_folder / "metrics" / key).read_text().split("\n")
    return [(int(line.split()[2]), float(line.split()[1])) for line in lines if line.strip()]


def test_with_selfsup_mlflow_a_run_logs_to_a_file_store_in_its_directory(enabled, tiny_recipe, plugins, tmp_path):
    run_dir = tmp_path / "run"
    make_trainer(tiny_recipe, plugins, run_dir, "eval.at_start=true", "eval.evaluators=[{name: knn, k: 5}]").fit()
    run_id = (run_dir / "mlflow-run-id").read_text().strip()
    [run_folder] = (run_dir / "mlruns").glob(f"*/{run_id}")
    assert [step for step, _ in metric(run_folder, "train/loss")] == list(range(1, 9))
    assert [step for step, _ in metric(run_folder, "eval/knn_top1")] == [0, 8]
    assert (run_folder / "params" / "optimizer.lr").read_text() == "0.05"
    assert (run_folder / "params" / "trainer.batch_size").read_text() == "64"
    meta = yaml.safe_load((run_folder / "meta.yaml").read_text())
    assert meta["run_name"] == "tiny" and meta["status"] == 3  # FINISHED
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # allowed while the store was made, then put back


def test_a_resumed_run_logs_to_the_same_mlflow_run(enabled, tiny_recipe, plugins, tmp_path):
    run_dir = tmp_path / "run"
    kill_at(5, make_trainer(tiny_recipe, plugins, run_dir), plugins)
    from toolkit.engine import Trainer

    Trainer.resume(run_dir, plugins, log=open(os.devnull, "w")).fit()
    [run_folder] = (run_dir / "mlruns").glob(f"*/{(run_dir / 'mlflow-run-id').read_text().strip()}")
    steps = [step for step, _ in metric(run_folder, "train/loss")]
    assert steps[-1] == 8 and set(steps) == set(range(1, 9))  # 4 and 5 twice: logged, killed, logged again


def status(run_dir):
    [run_folder] = (run_dir / "mlruns").glob(f"*/{(run_dir / 'mlflow-run-id').read_text().strip()}")
    return yaml.safe_load((run_folder / "meta.yaml").read_text())["status"]


def test_a_stopped_run_is_killed_then_running_again_on_resume_and_a_failed_one_failed(enabled, tiny_recipe, plugins,
                                                                                     tmp_path):
    from toolkit import TrainingInterrupted
    from toolkit.engine import Trainer, TrainingDiverged

    stopped = make_trainer(tiny_recipe, plugins, tmp_path / "stopped", "eval.evaluators=[]")
    stopped.request_stop()
    with pytest.raises(TrainingInterrupted):
        stopped.fit()
    stopped.directory.unlock()
    assert status(tmp_path / "stopped") == 5  # KILLED
    Trainer.resume(tmp_path / "stopped", plugins, log=open(os.devnull, "w")).fit()
    assert status(tmp_path / "stopped") == 3  # FINISHED
    diverged = make_trainer(tiny_recipe, plugins, tmp_path / "diverged", "optimizer.lr=1000000.0", "eval.evaluators=[]")
    with pytest.raises(TrainingDiverged):
        diverged.fit()
    assert status(tmp_path / "diverged") == 4  # FAILED


def test_without_selfsup_mlflow_nothing_is_logged(tiny_recipe, plugins, tmp_path, monkeypatch):
    monkeypatch.delenv("SELFSUP_MLFLOW", raising=False)
    make_trainer(tiny_recipe, plugins, tmp_path / "run", "schedule.max_steps=2").fit()
    assert not (tmp_path / "run" / "mlruns").exists() and not (tmp_path / "run" / "mlflow-run-id").exists()
