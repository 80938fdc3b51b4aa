"""The tiny recipe trains through selfsup's engine with either objective and exports an encoder."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from toolkit.engine import Trainer
from toolkit.plugins import Plugins
from toolkit.recipe import load_and_resolve

import selfsup_vicreg.plugin

from conftest import SAMPLE_DATA, needs_sample_data

pytestmark = needs_sample_data

TINY = selfsup_vicreg.plugin.RECIPES / "vicreg-tiny.yaml"
TERMS = {"vicreg": {"invariance", "variance", "covariance"}, "barlow-twins": {"on_diagonal", "off_diagonal"}}


@pytest.fixture(scope="module", params=sorted(TERMS))
def run(request: pytest.FixtureRequest, plugins: Plugins, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """``(objective, run directory)`` of three steps of the tiny recipe, without evaluation."""
    objective = request.param
    recipe = load_and_resolve(TINY, [f"data.path={SAMPLE_DATA}", f"objective={{name: {objective}}}",
                                     "schedule.max_steps=3", "trainer.log_every=1", "eval.evaluators=[]"], plugins)
    run_dir = tmp_path_factory.mktemp(objective) / "run"
    Trainer.from_recipe(recipe, plugins, run_dir, log=io.StringIO()).fit()
    return objective, run_dir


def test_training_exports_the_encoder(run: tuple[str, Path]) -> None:
    _, run_dir = run

    assert (run_dir / "encoder" / "encoder.json").is_file()


def test_training_logs_a_finite_loss_and_the_objectives_terms_every_step(run: tuple[str, Path]) -> None:
    objective, run_dir = run
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]

    assert [step["step"] for step in steps] == [1, 2, 3]
    assert all(math.isfinite(step["loss"]) for step in steps)
    assert all(TERMS[objective] <= set(step) for step in steps)
