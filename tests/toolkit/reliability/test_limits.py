"""Absurd values are refused by `selfsup recipe validate`, naming the recipe key, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import RECIPES
from toolkit import cli

QUICKSTART = str(RECIPES / "quickstart.yaml")


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.batch_size=0", "trainer.batch_size: must be >= 1 (got 0)"),
    ("trainer.batch_size=-64", "trainer.batch_size: must be >= 1 (got -64)"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches: must be >= 1"),
    ("trainer.accumulate_grad_batches=3", "trainer.accumulate_grad_batches: must divide batch_size (128)"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every: must be >= 1"),
    ("trainer.log_every=0", "trainer.log_every: must be >= 1"),
    ("trainer.clip_grad_norm=-1", "trainer.clip_grad_norm: must be > 0"),
    ("trainer.seed=-1", "trainer.seed: must be >= 0 and < 9223372036854775808"),
    (f"trainer.seed={2**70}", "trainer.seed: must be >= 0 and < 9223372036854775808"),
    ("schedule.epochs=0", "schedule.epochs: must be >= 1"),
    ("schedule.epochs=-1", "schedule.epochs: must be >= 1"),
    ("schedule.max_steps=0", "schedule.max_steps: must be >= 1"),
    ("schedule.max_steps=-5", "schedule.max_steps: must be >= 1"),
    ("schedule.warmup_steps=-5", "schedule.warmup_steps: must be >= 0"),
    ("schedule.min_lr_ratio=5", "schedule.min_lr_ratio: must be >= 0 and <= 1"),
    ("optimizer.lr=-0.1", "optimizer.lr: must be > 0"),
    ("optimizer={name: lars, lr: -0.1}", "optimizer.lr: must be > 0"),
    ("optimizer.momentum=5", "optimizer.momentum: must be >= 0 and <= 1"),
    ("projector.output_dim=0", "projector.output_dim: must be >= 1"),
    ("eval.evaluators=[{name: knn, k: 0}]", "eval.evaluators.0.k: must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size: must be >= 1"),
    ("augmentation.size=0", "augmentation.size: must be >= 1"),
    ("augmentation.scale=[1.0, 0.2]", "augmentation.scale: must be ascending"),
    ("augmentation.jitter_prob=1.5", "augmentation.jitter_prob: must be >= 0 and <= 1"),
    ("encoder.width=0", "encoder.width: must be >= 1"),
    ("objective.temperature=0", "objective.temperature: must be > 0"),
])
def test_an_out_of_range_value_is_refused_with_its_key(override: str, message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["recipe", "validate", QUICKSTART, override]) == 2
    assert f"override {override!r}: {message}" in capsys.readouterr().err


def _recipe(tmp_path: Path, body: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"extends: {QUICKSTART}\n{body}", encoding="utf-8")
    return str(path)


def test_a_section_given_twice_is_an_error_naming_both_lines(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, "trainer: {batch_size: 64}\nname: twice\ntrainer: {seed: 3}\n")
    assert cli.main(["recipe", "validate", recipe]) == 2
    assert f"{recipe}:4: key 'trainer' is given twice in one mapping (first at line 2)" in capsys.readouterr().err


def test_a_key_given_twice_inside_a_block_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, "trainer:\n  seed: 1\n  seed: 2\n")
    assert cli.main(["recipe", "validate", recipe]) == 2
    assert f"{recipe}:4: key 'seed' is given twice in one mapping (first at line 3)" in capsys.readouterr().err


def test_a_yaml_alias_bomb_is_refused_at_its_first_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    recipe = _recipe(tmp_path, "description:\n" + "".join(f"  {line}\n" for line in levels))
    assert cli.main(["recipe", "validate", recipe]) == 2
    assert f"{recipe}:4: aliases (*a0) are not allowed in recipes" in capsys.readouterr().err


def test_an_alias_in_a_command_line_override_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["recipe", "validate", QUICKSTART, "description=[&x a, *x]"]) == 2
    assert "aliases (*x) are not allowed in recipes" in capsys.readouterr().err
