"""The image methods' tiny recipes through the engine: every one trains, and a killed MoCo or BYOL
run resumes exactly (queue, key encoder, target network, tau schedule)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from toolkit import checkpoint
from toolkit.engine import CHECKPOINT, Trainer
from toolkit.recipe import load_and_resolve

from conftest import RECIPES
from helpers import assert_same_state, kill_at

TINY = RECIPES / "tiny"


# 4 steps per epoch: six steps, killed at step 5, resumed from the checkpoint at step 3 (mid-epoch 0)
SHORT = ["eval.evaluators=[]", "trainer.log_every=100", "schedule.max_steps=6", "trainer.checkpoint_every=3"]


def make_trainer(recipe: Path, plugins, run_dir: Path, *overrides: str) -> Trainer:
    resolved = load_and_resolve(recipe, [*SHORT, *overrides], plugins)
    return Trainer.from_recipe(resolved, plugins, run_dir, log=open("/dev/null", "w"))


def straight_and_resumed(recipe: Path, plugins, tmp_path: Path) -> tuple[Trainer, Trainer]:
    straight = make_trainer(recipe, plugins, tmp_path / "straight")
    straight.fit()
    kill_at(5, make_trainer(recipe, plugins, tmp_path / "killed"), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=open("/dev/null", "w"))
    assert resumed.step == 3
    resumed.fit()
    return straight, resumed


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*-cifar10.yaml")) + sorted(TINY.glob("*.yaml")),
                         ids=lambda path: path.stem if path.parent == TINY else f"{path.stem} (full)")
def test_method_recipes_validate(recipe, plugins):
    assert load_and_resolve(recipe, [], plugins).block("objective")["name"]


@pytest.mark.parametrize("name", ["simsiam", "supcon", "instdisc", "multicrop"])  # moco, byol: the resume tests
def test_tiny_recipe_trains_through_the_engine(name, plugins, tmp_path):
    trainer = make_trainer(TINY / f"{name}.yaml", plugins, tmp_path / "run", "schedule.max_steps=2")
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 2 and [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in records)


def test_moco_resumes_exactly_after_a_kill(plugins, tmp_path):
    straight, resumed = straight_and_resumed(TINY / "moco.yaml", plugins, tmp_path)
    state = resumed.model.state_dict()
    assert {"objective.queue.keys", "objective.queue.pointer"} <= state.keys()
    assert any(key.startswith("objective.target.encoder.") for key in state)
    assert int(state["objective.queue.pointer"]) == 6 * 64 % 80  # six batches of 64 keys wrapped around 80 slots
    assert_same_state(straight.model.state_dict(), state)


def test_byol_resumes_exactly_after_a_kill(plugins, tmp_path):
    straight, resumed = straight_and_resumed(TINY / "byol.yaml", plugins, tmp_path)
    state = resumed.model.state_dict()
    assert any(key.startswith("objective.target.projector.") for key in state)
    assert float(state["objective.target.momentum"]) == pytest.approx(1 - 0.01 * (math.cos(math.pi * 5 / 6) + 1) / 2)
    assert_same_state(straight.model.state_dict(), state)


def test_the_instdisc_memory_bank_is_saved_in_the_checkpoint(plugins, tmp_path):
    trainer = make_trainer(TINY / "instdisc.yaml", plugins, tmp_path / "run", "schedule.max_steps=2")
    trainer.fit()
    saved = checkpoint.load(tmp_path / "run" / CHECKPOINT)["model"]["objective.bank.vectors"]
    assert saved.shape == (256, 32)
    assert torch.equal(saved, trainer.model.objective.bank.vectors.cpu())
