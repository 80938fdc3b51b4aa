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

from conftest import RECIPES, ROOT, needs_shared_data

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
                          env=environment, timeout=240)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "encoder" / "model.safetensors")


def learned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything but batch-norm running statistics, which training (in train mode) never reads."""
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


# Every method on the toy vectors (a BN-free MLP unless the case turns batch norm on): name -> settings.
CASES = {
    "vector-contrast": ["objective={name: vector-contrast, temperature: 0.5}"],
    "nt-xent": ["objective={name: nt-xent, temperature: 0.5}"],
    "supcon": ["objective={name: supcon, temperature: 0.5}"],
    # shuffle-BN: 4 batch-norm groups, 2 per process; a 48-key queue wraps around mid-batch
    "moco": ["encoder.batch_norm=true", "objective={name: moco, temperature: 0.5, queue_size: 48, momentum: 0.9, "
             "symmetric: true, bn_groups: 4}"],
    # the predictor's batch norm (and the encoder's) synchronized across processes
    "byol": ["encoder.batch_norm=true", "trainer.sync_batchnorm=true",
             "objective={name: byol, base_tau: 0.9, predictor_hidden_dim: 8}"],
    "instdisc": ["objective={name: instdisc, temperature: 0.5, num_negatives: 16}"],
}


def one_and_two_processes(tmp_path: Path, recipe: str, settings: list[str]) -> tuple[Path, Path]:
    """Run directories of the same recipe trained on one process and on two."""
    one, two = tmp_path / "nproc1", tmp_path / "nproc2"
    result = train(recipe, *settings, "--run-dir", str(one))
    assert result.returncode == 0, result.stderr
    result = train(recipe, *settings, "--nproc", "2", "--run-dir", str(two))
    assert result.returncode == 0, result.stderr
    return one, two


@pytest.fixture(scope="module", params=list(CASES))
def runs(request, tmp_path_factory) -> tuple[Path, Path]:
    return one_and_two_processes(tmp_path_factory.mktemp(request.param), RECIPE, [*SETTINGS, *CASES[request.param]])


def test_two_processes_compute_the_loss_of_the_global_batch(runs):
    single, double = ([r["loss"] for r in records(run)] for run in runs)
    assert len(single) == len(double) == 8
    assert single == pytest.approx(double, abs=1e-5)


def test_two_processes_take_the_same_optimizer_steps_as_one(runs):
    single, double = (learned(weights(run)) for run in runs)
    assert all(torch.allclose(single[k], double[k], atol=1e-5) for k in single)


def test_objective_state_after_two_processes_is_that_of_one(runs):
    """Queues, memory banks and momentum targets in rank 0's checkpoint. An objective that
    updated them from its own shard only would differ here (and DDP's buffer broadcast would
    silently replace the other processes' state with rank 0's at every step)."""
    single, double = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"] for run in runs)
    state = {k: v for k, v in learned(single).items() if k.startswith("objective.")}
    assert all(torch.allclose(v, double[k], atol=1e-5) for k, v in state.items())


# The real image encoders: width-4 ResNet-18 with batch norm on 16x16 CIFAR-10 crops.
IMAGE_CASES = {
    "simclr-syncbn": ("tiny.yaml", ["trainer.sync_batchnorm=true"]),
    "moco-shuffle-bn": ("tiny/moco.yaml", []),  # 2 shuffled BN groups: one per process
    "byol-syncbn": ("tiny/byol.yaml", ["trainer.sync_batchnorm=true"]),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_methods_train_on_two_processes_like_on_one(case, tmp_path):
    """Two steps: this tiny network is chaotic (a 1e-6 perturbation of its initial weights
    grows to 1e-4 in one SGD step and 4e-3 in two), so float rounding (3e-7 after one step
    here) must not be given longer to grow; a gradient off by a factor moves weights by ~1e-2."""
    recipe, settings = IMAGE_CASES[case]
    runs = one_and_two_processes(tmp_path, str(RECIPES / recipe), [
        *settings, "schedule.max_steps=2", "trainer.log_every=1", "eval.evaluators=[]", "eval.at_start=false"])
    single, double = ([r["loss"] for r in records(run)] for run in runs)
    assert len(single) == 2 and single == pytest.approx(double, rel=1e-5)
    single, double = (learned(weights(run)) for run in runs)
    assert all(torch.allclose(single[k], double[k], atol=2e-4) for k in single)


@needs_shared_data
def test_cpc_draws_the_same_negatives_on_two_processes_as_on_one(tmp_path):
    runs = one_and_two_processes(tmp_path, str(RECIPES / "tiny" / "cpc.yaml"), [
        "trainer.log_every=1", "eval.evaluators=[]", "eval.at_start=false"])
    single, double = (records(run) for run in runs)
    assert [r["loss"] for r in single] == pytest.approx([r["loss"] for r in double], abs=1e-5)
    assert [r["cpc_acc"] for r in single] == pytest.approx([r["cpc_acc"] for r in double], abs=1e-6)
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
    resumed = train("--resume", str(run_dir), "--nproc", "2", "--trust-plugins")  # the recipe lists a local plugin
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in records(run_dir)] == list(range(1, 9))
    expected = weights(straight)
    assert all(torch.equal(expected[k], tensor) for k, tensor in weights(run_dir).items())
