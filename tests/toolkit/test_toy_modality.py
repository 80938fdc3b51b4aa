"""Every component kind from one local plugin trains through the unchanged engine."""

from __future__ import annotations

import json

from toolkit.engine import Trainer
from toolkit.plugins import discover
from toolkit.recipe import load_and_resolve

from conftest import ROOT

RECIPE = ROOT / "tests" / "local_plugins" / "vectors.yaml"
SETTINGS = ["optimizer={name: adamw, lr: 0.01}", "schedule.epochs=5", "trainer.checkpoint_every=10",
            "eval={at_start: true, evaluators: [{name: centroid}, {name: knn, k: 5}]}"]


def test_a_plugin_can_supply_every_component_kind(tmp_path):
    plugins = discover()
    trainer = Trainer.from_recipe(load_and_resolve(RECIPE, SETTINGS, plugins), plugins, tmp_path / "run",
                                  log=open("/dev/null", "w"))
    final = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 20 and records[0]["kind"] == "eval_start"
    assert final["centroid_top1"] >= 0.9 and final["knn_top1"] >= 0.9
