"""Plugins without packaging: --plugins-dir, a recipe's `plugins:` list, and hook tracing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.plugins import PluginError, discover
from toolkit.recipe import RecipeError, load_and_resolve

COSINE_PLUGIN = '''
import torch.nn.functional as F
from toolkit import Objective, ObjectiveOutput, hookimpl


class NegativeCosine(Objective):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, batch, encoder, projector):
        z1, z2 = (projector(encoder(view)) for view in batch.views[:2])
        return ObjectiveOutput(-self.scale * F.cosine_similarity(z1, z2).mean(), {})


@hookimpl
def register_objectives(register):
    register("negative-cosine", NegativeCosine)
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "cosine.py").write_text(COSINE_PLUGIN)
    (folder / "_helpers.py").write_text("raise RuntimeError('private modules are not plugins')\n")
    return folder


def run(*args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, SELFSUP_TRACE_PLUGINS="")
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, env=environment)


def test_every_module_of_a_plugins_dir_is_registered_as_a_local_plugin(plugin_dir):
    plugins = discover()
    assert plugins.add_local([plugin_dir]) == ["local:cosine"]
    assert plugins.get("objective", "negative-cosine").plugin == "local:cosine"


def test_adding_the_same_local_plugin_twice_is_a_no_op(plugin_dir):
    plugins = discover()
    plugins.add_local([plugin_dir])
    plugins.add_local([plugin_dir / "cosine.py"])
    assert plugins.names("objective").count("negative-cosine") == 1


def test_a_local_plugin_that_fails_to_import_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(PluginError, match=r"broken\.py failed to import: ModuleNotFoundError"):
        discover().add_local([tmp_path / "broken.py"])


def test_train_with_plugins_dir_uses_the_local_objective(plugin_dir, tiny_recipe, tmp_path):
    result = run("train", str(tiny_recipe), "objective={name: negative-cosine, scale: 2.0}", "schedule.max_steps=2",
                 "eval.evaluators=[]", "--plugins-dir", str(plugin_dir), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(-2.0 <= loss <= 2.0 for loss in losses)


def test_plugins_command_lists_a_plugins_dir(plugin_dir):
    result = run("plugins", "--plugins-dir", str(plugin_dir))
    assert f"local:cosine ({plugin_dir / 'cosine.py'})" in result.stdout
    assert "objectives:     negative-cosine" in result.stdout


def test_a_recipe_plugins_list_is_resolved_from_the_recipe_folder(plugin_dir, tiny_recipe, tmp_path):
    recipe = plugin_dir.parent / "with-plugins.yaml"
    recipe.write_text(f"extends: {tiny_recipe}\nplugins: [my_plugins]\nobjective: {{name: negative-cosine}}\n")
    resolved = load_and_resolve(recipe, [], discover())
    assert resolved.values["plugins"] == [str(plugin_dir)]
    assert resolved.block("objective") == {"name": "negative-cosine", "scale": 1.0}


def test_a_recipe_plugins_list_must_name_existing_paths(tiny_recipe, tmp_path):
    recipe = tmp_path / "missing.yaml"
    recipe.write_text(f"extends: {tiny_recipe}\nplugins: [nowhere/]\n")
    with pytest.raises(RecipeError, match=r"missing\.yaml:2: plugins: plugin path .*nowhere does not exist"):
        load_and_resolve(recipe, [], discover())


def test_resume_reloads_the_plugins_a_recipe_lists_when_trusted(plugin_dir, tiny_recipe, tmp_path):
    recipe = plugin_dir.parent / "with-plugins.yaml"
    recipe.write_text(f"extends: {tiny_recipe}\nplugins: [my_plugins]\nobjective: {{name: negative-cosine}}\n"
                      f"eval: {{evaluators: []}}\n")
    assert run("train", str(recipe), "schedule.max_steps=2", "--run-dir", str(tmp_path / "run")).returncode == 0
    resumed = run("train", "--resume", str(tmp_path / "run"), "schedule.max_steps=3", "--trust-plugins")
    assert resumed.returncode == 0, resumed.stderr


def test_trace_plugins_prints_every_hook_call(tiny_recipe):
    environment = dict(os.environ, SELFSUP_TRACE_PLUGINS="1")
    result = subprocess.run([sys.executable, "-m", "toolkit", "recipe", "validate", str(tiny_recipe)],
                            capture_output=True, text=True, env=environment)
    assert result.returncode == 0
    assert "selfsup hook: register_encoders -> plugin image" in result.stderr
