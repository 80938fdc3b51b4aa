"""Every component kind from one local plugin trains through the unchanged engine."""

from __future__ import annotations

import json

from toolkit.engine import Trainer
from toolkit.plugins import discover
from toolkit.recipe import load_and_resolve

from conftest import ROOT

RECIPE = """
plugins: [{plugins}]
data: {{name: clustered-vectors, size: 128}}
augmentation: {{name: gaussian-noise, sigma: 0.3}}
encoder: {{name: vector-mlp, width: 16}}
projector: {{name: vector-linear, output_dim: 4}}
objective: {{name: vector-contrast}}
optimizer: {{name: adamw, lr: 0.01}}
schedule: {{epochs: 5}}
trainer: {{batch_size: 32, checkpoint_every: 10}}
eval: {{at_start: true, evaluators: [{{name: centroid}}, {{name: knn, k: 5}}]}}
"""


def test_a_plugin_can_supply_every_component_kind(tmp_path):
    recipe = tmp_path / "vectors.yaml"
    recipe.write_text(RECIPE.format(plugins=ROOT / "tests" / "local_plugins" / "vectors.py"))
    plugins = discover()
    trainer = Trainer.from_recipe(load_and_resolve(recipe, [], plugins), plugins, tmp_path / "run",
                                  log=open("/dev/null", "w"))
    final = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 20 and records[0]["kind"] == "eval_start"
    assert final["centroid_top1"] >= 0.9 and final["knn_top1"] >= 0.9
