"""Exact resume whatever the recipe evaluates and when: evaluation leaves no trace in the training state.

Each case trains straight through, and again with a kill after step 5 (last checkpoint at step 3)
and a resume; periodic evaluation runs every 2 steps. The final weights, buffers and optimizer
state must be identical, and the metrics log must hold each record once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import RECIPES, needs_shared_data
from helpers import QUIET, assert_same_state, kill_at, make_trainer
from toolkit.engine import Trainer
from toolkit.plugins import Plugins

EVERY_TWO_STEPS = ["eval.every_steps=2", "trainer.checkpoint_every=3"]
CASES = [
    pytest.param(RECIPES / "tiny.yaml", [], id="image-simclr"),
    pytest.param(RECIPES / "tiny.yaml", ["eval.select_best={metric: knn_top1}", "eval.at_start=true"],
                 id="image-select-best"),
    pytest.param(RECIPES / "tiny" / "moco.yaml", [], id="image-moco"),
    pytest.param(RECIPES / "tiny" / "cpc.yaml", [], id="sequence-cpc", marks=needs_shared_data),
    pytest.param(RECIPES / "simcse-tiny.yaml", [], id="text-simcse", marks=needs_shared_data),
    pytest.param(RECIPES / "tiny" / "temporal.yaml", [], id="video-temporal", marks=needs_shared_data),
]


@pytest.mark.parametrize(("recipe", "extra"), CASES)
def test_kill_and_resume_with_periodic_evaluation_is_exact(recipe: Path, extra: list[str], plugins: Plugins,
                                                            tmp_path: Path) -> None:
    overrides = [*EVERY_TWO_STEPS, "schedule.epochs=8", "schedule.max_steps=8", *extra]
    straight = make_trainer(recipe, plugins, tmp_path / "straight", *overrides)
    straight.fit()
    kill_at(5, make_trainer(recipe, plugins, tmp_path / "killed", *overrides), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=QUIET)
    assert resumed.step == 3
    resumed.fit()

    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert straight.optimizer.state_dict()["state"].keys() == resumed.optimizer.state_dict()["state"].keys()
    for index, moments in straight.optimizer.state_dict()["state"].items():
        assert_same_state(moments, resumed.optimizer.state_dict()["state"][index])

    def records(run: str) -> list[tuple[str, int]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(json.loads(line)["kind"], json.loads(line)["step"]) for line in lines]

    assert records("killed") == records("straight")
    assert len(set(records("straight"))) == len(records("straight"))
