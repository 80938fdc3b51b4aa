"""Distributed training on CPU (gloo, 2 processes through `selfsup train --nproc 2`).

Two processes with a per-process batch of B must train exactly like one process with 2B: the
global batch is split without overlap, negatives are gathered with correct gradients, and
DDP averages the rest. A missing sum in the gather's backward, or gradients off by the number
of processes, would show up here as diverging weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT

pytestmark = pytest.mark.slow

RECIPE = str(ROOT / "tests" / "local_plugins" / "vectors.yaml")
SETTINGS = ["optimizer={name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.0}", "schedule.epochs=2",
            "trainer.checkpoint_every=1", "trainer.log_every=1", "eval.evaluators=[]"]


def train(*args: str, crash_at: int | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    environment["OMP_NUM_THREADS"] = "1"
    if crash_at is not None:
        environment["SELFSUP_TEST_CRASH_AT"] = str(crash_at)
    return subprocess.run([sys.executable, "-m", "toolkit", "train", *args], capture_output=True, text=True,
                          env=environment, timeout=600)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "encoder" / "model.safetensors")


OBJECTIVES = ["vector-contrast", "nt-xent", "supcon"]  # the toy plugin's, image SimCLR's, SupCon's


@pytest.fixture(scope="module", params=OBJECTIVES)
def runs(request, tmp_path_factory) -> tuple[Path, Path]:
    """Run directories of the same recipe on one process and on two."""
    settings = [*SETTINGS, f"objective={{name: {request.param}, temperature: 0.5}}"]
    one, two = (tmp_path_factory.mktemp(f"{request.param}-{n}") / "run" for n in (1, 2))
    result = train(RECIPE, *settings, "--run-dir", str(one))
    assert result.returncode == 0, result.stderr
    result = train(RECIPE, *settings, "--nproc", "2", "--run-dir", str(two))
    assert result.returncode == 0, result.stderr
    return one, two


def test_two_processes_compute_the_loss_of_the_global_batch(runs):
    single, double = ([r["loss"] for r in records(run)] for run in runs)
    assert len(single) == len(double) == 8
    assert single == pytest.approx(double, abs=1e-5)


def test_two_processes_take_the_same_optimizer_steps_as_one(runs):
    single, double = (weights(run) for run in runs)
    assert all(torch.allclose(single[k], double[k], atol=1e-5) for k in single)


def test_only_the_main_process_writes_metrics(runs):
    assert [r["step"] for r in records(runs[1])] == list(range(1, 9))


def test_a_killed_two_process_run_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    assert train(RECIPE, *SETTINGS, "--nproc", "2", "--run-dir", str(straight)).returncode == 0
    run_dir = tmp_path / "run"
    crashed = train(RECIPE, *SETTINGS, "--nproc", "2", "--run-dir", str(run_dir), crash_at=5)
    assert crashed.returncode != 0 and "simulated crash at step 5" in crashed.stderr
    resumed = train("--resume", str(run_dir), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in records(run_dir)] == list(range(1, 9))
    expected = weights(straight)
    assert all(torch.equal(expected[k], tensor) for k, tensor in weights(run_dir).items())
