"""SIGTERM and Ctrl-C: finish the step, write a checkpoint, exit 75; resume continues exactly.

The CLI runs the tiny recipe with a local plugin that signals its own process when a chosen
step ends, so the signal arrives at a known point of the run.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from conftest import RECIPES, ROOT
from helpers import SIGNALLING_PLUGIN, run_cli
from toolkit import checkpoint
from toolkit.errors import INTERRUPTED
from toolkit.engine import CHECKPOINT

FAST = ["eval.evaluators=[]", "trainer.checkpoint_every=100"]


@pytest.fixture
def signalling_plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "send_signal.py").write_text(SIGNALLING_PLUGIN)
    return folder


def train(run_dir: Path, plugins: Path | None = None, env: dict[str, str] | None = None, *extra: str):
    options = ["--plugins-dir", str(plugins)] if plugins else []
    return run_cli("train", str(RECIPES / "tiny.yaml"), *FAST, *extra, "--run-dir", str(run_dir), *options,
                   cwd=ROOT, env=env)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_step_writes_a_checkpoint_and_exits_75(
        name: str, signalling_plugins: Path, tmp_path: Path) -> None:
    stopped = train(tmp_path / "run", signalling_plugins, {"SEND_AT_STEP": "3", "SEND_SIGNAL": name})
    assert stopped.returncode == INTERRUPTED, stopped.stderr
    assert f"{name}: stopping after step 4 with a checkpoint" in stopped.stderr
    assert f"stopped by {name} after step 4/8; checkpoint written" in stopped.stderr
    assert checkpoint.load(tmp_path / "run" / CHECKPOINT)["step"] == 4
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["event"] == "interrupted" and history[-1]["signal"] == name


def test_a_run_stopped_by_a_signal_resumes_to_the_same_weights(signalling_plugins: Path, tmp_path: Path) -> None:
    assert train(tmp_path / "straight").returncode == 0
    stopped = train(tmp_path / "run", signalling_plugins, {"SEND_AT_STEP": "3", "SEND_SIGNAL": "SIGTERM"})
    assert stopped.returncode == INTERRUPTED
    resumed = run_cli("train", "--resume", str(tmp_path / "run"), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "at step 4/8" in resumed.stderr
    straight = checkpoint.load(tmp_path / "straight" / CHECKPOINT)["model"]
    continued = checkpoint.load(tmp_path / "run" / CHECKPOINT)["model"]
    assert all(torch.equal(straight[key], continued[key]) for key in straight)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_a_second_signal_stops_at_once(signalling_plugins: Path, tmp_path: Path) -> None:
    stopped = train(tmp_path / "run", signalling_plugins,
                    {"SEND_AT_STEP": "3", "SEND_SIGNAL": "SIGTERM", "SEND_TIMES": "2"})
    assert stopped.returncode == -signal.SIGTERM
    assert not (tmp_path / "run" / CHECKPOINT).exists()  # killed before its first checkpoint (at step 100)


def test_resuming_a_run_killed_before_its_first_checkpoint_starts_it_from_step_0(
        signalling_plugins: Path, tmp_path: Path) -> None:
    killed = train(tmp_path / "run", signalling_plugins, {"SEND_AT_STEP": "2", "SEND_SIGNAL": "SIGKILL"})
    assert killed.returncode == -signal.SIGKILL
    resumed = run_cli("train", "--resume", str(tmp_path / "run"), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "starting (no checkpoint yet)" in resumed.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
