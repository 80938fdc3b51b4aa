"""A diverging run keeps a checkpoint that is good, and the advice it prints can be followed as printed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import RECIPES
from helpers import QUIET, make_trainer
from toolkit import checkpoint
from toolkit.engine import CHECKPOINT, Trainer, TrainingDiverged
from toolkit.interfaces import ObjectiveOutput
from toolkit.plugins import Plugins
from toolkit.recipe import RecipeError

TINY = RECIPES / "tiny.yaml"
HUGE_LR = ["optimizer.lr=1000000.0", "trainer.checkpoint_every=1", "eval.evaluators=[]"]


def diverge(plugins: Plugins, run_dir: Path) -> TrainingDiverged:
    trainer = make_trainer(TINY, plugins, run_dir, *HUGE_LR)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit()
    trainer.directory.unlock()
    return caught.value


def test_no_checkpoint_holds_non_finite_state_after_a_divergence(plugins: Plugins, tmp_path: Path) -> None:
    error = diverge(plugins, tmp_path / "run")
    path = tmp_path / "run" / CHECKPOINT
    if path.exists():
        kept = checkpoint.load(path)
        assert not checkpoint.non_finite({"model": kept["model"], "optimizer": kept["optimizer"]})
        assert f"the last good checkpoint is {path} (step {kept['step']})" in str(error)
    else:
        assert "no checkpoint was written yet" in str(error)


def test_the_divergence_advice_works_as_printed(plugins: Plugins, tmp_path: Path) -> None:
    trainer = make_trainer(TINY, plugins, tmp_path / "run", "eval.evaluators=[]", "trainer.checkpoint_every=2")
    real_forward = trainer.model.objective.forward

    def nan_at_step_five(batch, encoder, projector):  # a loss spike, as a too-high learning rate makes
        output = real_forward(batch, encoder, projector)
        return ObjectiveOutput(output.loss * math.nan, output.metrics) if trainer.step == 4 else output

    trainer.model.objective.forward = nan_at_step_five
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit()
    trainer.directory.unlock()
    error = str(caught.value)
    assert f"the last good checkpoint is {tmp_path / 'run' / CHECKPOINT} (step 4)" in error
    command = re.search(r"`selfsup train --resume (\S+) (optimizer.lr=\S+ trainer.clip_grad_norm=\S+)`", error)
    assert command, error
    assert command.group(2) == "optimizer.lr=0.005 trainer.clip_grad_norm=1.0"
    resumed = Trainer.resume(Path(command.group(1)), plugins, command.group(2).split(), log=QUIET)
    assert resumed.step == 4
    resumed.fit()
    assert resumed.step == resumed.total_steps == 8
    recipe = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert recipe["optimizer"]["lr"] == 0.005 and recipe["trainer"]["clip_grad_norm"] == 1.0
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [event["event"] for event in history] == ["start", "diverged", "resume", "finished"]
    assert history[2]["changed"] == {"optimizer.lr": [0.05, 0.005], "trainer.clip_grad_norm": [None, 1.0]}
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_a_resumed_learning_rate_reaches_the_optimizer(plugins: Plugins, tmp_path: Path) -> None:
    trainer = make_trainer(TINY, plugins, tmp_path / "run", "eval.evaluators=[]", "schedule.max_steps=4",
                           "schedule.warmup_steps=0", "optimizer.lr=0.05")
    trainer.fit()
    trainer.directory.unlock()
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # the end of the old 4-step cosine
    resumed = Trainer.resume(tmp_path / "run", plugins, ["optimizer.lr=0.01", "schedule.max_steps=6"], log=QUIET)
    assert resumed.scheduler.base_lrs == pytest.approx([0.01, 0.01])
    position = resumed.scheduler.lr_lambdas[0](4)  # step 4 of the new 6-step cosine
    assert 0 < position < 1
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([0.01 * position] * 2)


def test_resuming_with_a_change_outside_the_resumable_keys_is_refused_with_the_difference(
        plugins: Plugins, tmp_path: Path) -> None:
    trainer = make_trainer(TINY, plugins, tmp_path / "run", "eval.evaluators=[]", "schedule.max_steps=2")
    trainer.fit()
    trainer.directory.unlock()
    with pytest.raises(RecipeError, match=r"trainer.batch_size: 64 -> 32\n.*can only resume with a change of "
                                          r"optimizer.lr"):
        Trainer.resume(tmp_path / "run", plugins, ["trainer.batch_size=32"], log=QUIET)


def test_an_edited_recipe_file_is_refused_on_resume(plugins: Plugins, tmp_path: Path) -> None:
    trainer = make_trainer(TINY, plugins, tmp_path / "run", "eval.evaluators=[]", "schedule.max_steps=2")
    trainer.fit()
    trainer.directory.unlock()
    recipe = tmp_path / "run" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("limit: 256", "limit: 128", 1))
    with pytest.raises(RecipeError, match=r"data.limit: 256 -> 128"):
        Trainer.resume(tmp_path / "run", plugins, log=QUIET)
