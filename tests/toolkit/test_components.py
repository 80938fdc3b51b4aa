"""The component table and the one build path: nested blocks, interface checks, errors vs bugs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import Tensor

from toolkit import Encoder, hookimpl
from toolkit.components import ComponentError, KINDS
from toolkit.errors import PluginError, RecipeError, SelfsupError
from toolkit.plugins import discover
from toolkit.recipe import build, load_and_resolve


class Scaled(Encoder):
    """Any registered encoder, scaled: a nested ``inner`` block."""

    def __init__(self, inner: Encoder = "resnet18", scale: float = 2.0) -> None:
        super().__init__()
        self.inner, self.scale, self.output_dim = inner, scale, inner.output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) * self.scale


def not_an_encoder(width: int = 4) -> torch.nn.Module:
    return torch.nn.Linear(width, width)


def refuses(width: int = 4) -> Encoder:
    raise ValueError(f"encoder.width {width} does not suit this data")


def crashes(width: int = 4) -> Encoder:
    return {}["a bug"]


def encoder_only_sgd(params: list[dict], model: torch.nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    """Ignores the default groups: one group of the encoder's parameters."""
    return torch.optim.SGD(model.encoder.parameters(), lr=lr)


class Components:
    @hookimpl
    def register_optimizers(self, register):
        register("encoder-only-sgd", encoder_only_sgd)

    @hookimpl
    def register_encoders(self, register):
        register("scaled", Scaled)
        register("not-an-encoder", not_an_encoder)
        register("refuses", refuses)
        register("crashes", crashes)


@pytest.fixture
def plugins():
    return discover(extra={"components": Components()})


def test_every_kind_names_its_hook_and_interface():
    assert {kind.hook for kind in KINDS.values()} == {f"register_{name}s" for name in
                                                      ("augmentation", "encoder", "projector", "objective",
                                                       "datasource", "evaluator", "optimizer")}
    assert KINDS["optimizer"].interface is torch.optim.Optimizer and "params" in KINDS["optimizer"].injected


def test_a_nested_block_is_validated_resolved_and_built(plugins, tiny_recipe):
    recipe = load_and_resolve(tiny_recipe, ["encoder={name: scaled, inner: {name: resnet18, width: 4, stem: cifar}}"],
                              plugins)
    assert recipe.block("encoder")["inner"]["stem"] == "cifar"
    assert recipe.block("encoder")["inner"]["mean"] == [0.485, 0.456, 0.406]  # the nested defaults, filled in
    encoder = recipe.build("encoder")
    assert isinstance(encoder.inner, Encoder) and encoder.output_dim == 32


def test_a_nested_block_may_be_a_bare_name_or_left_to_its_default(plugins):
    assert build(plugins, "encoder", {"name": "scaled", "inner": "resnet34"}).inner.output_dim == 512
    assert type(build(plugins, "encoder", {"name": "scaled"}).inner).__name__ == "ResNet18"


def test_errors_inside_a_nested_block_name_its_key_path(plugins, tiny_recipe):
    with pytest.raises(RecipeError, match=r"encoder\.inner\.widht: unknown key; did you mean 'width'"):
        load_and_resolve(tiny_recipe, ["encoder={name: scaled, inner: {name: resnet18, widht: 4}}"], plugins)
    with pytest.raises(RecipeError, match=r"encoder\.inner\.name: no encoder named 'resnet19'"):
        load_and_resolve(tiny_recipe, ["encoder={name: scaled, inner: resnet19}"], plugins)


def test_a_factory_that_returns_the_wrong_kind_is_named(plugins):
    with pytest.raises(TypeError, match="not_an_encoder is registered as a encoder but returned Linear, not a "
                                        "toolkit.interfaces.Encoder"):
        build(plugins, "encoder", {"name": "not-an-encoder"})


def test_a_factory_refusing_its_input_is_a_recipe_error_and_a_bug_stays_a_bug(plugins):
    with pytest.raises(ComponentError, match="encoder.width 4 does not suit this data"):
        build(plugins, "encoder", {"name": "refuses"})
    with pytest.raises(KeyError) as raised:
        build(plugins, "encoder", {"name": "crashes"})
    assert not isinstance(raised.value, SelfsupError)
    assert "while building encoder 'crashes' of plugin 'components'" in raised.value.__notes__


def test_recipe_validate_checks_what_needs_no_data(tiny_recipe, plugins):
    with pytest.raises(RecipeError, match="accumulate_grad_batches: must divide batch_size"):
        load_and_resolve(tiny_recipe, ["trainer.accumulate_grad_batches=3"], plugins)
    with pytest.raises(RecipeError, match="objective cpc takes"):
        load_and_resolve(tiny_recipe, ["objective={name: cpc}"], plugins)


def test_a_misspelled_hook_is_the_plugins_load_error_with_the_close_match(tmp_path):
    plugin = tmp_path / "misspelled.py"
    plugin.write_text(textwrap.dedent("""
        from toolkit import hookimpl

        @hookimpl
        def register_objective(register):
            register("never-registered", object)
    """))
    listing = subprocess.run([sys.executable, "-m", "toolkit", "plugins", "--plugins-dir", str(plugin)],
                             capture_output=True, text=True, check=True).stdout
    assert ("FAILED TO LOAD: plugin 'local:misspelled' implements 'register_objective', which is not a selfsup "
            "hook; did you mean 'register_objectives'?") in listing


def test_strict_plugins_make_a_misspelled_hook_fatal(monkeypatch):
    class Misspelled:
        @hookimpl
        def on_step_ends(self, run, step, metrics):
            pass

    monkeypatch.setenv("SELFSUP_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="'on_step_ends', which is not a selfsup hook; did you mean 'on_step_end'"):
        discover(extra={"misspelled": Misspelled()}, only=set())


def test_the_cli_prints_selfsup_errors_in_one_line_and_bugs_with_their_traceback(tmp_path, tiny_recipe):
    plugin = tmp_path / "buggy.py"
    plugin.write_text(textwrap.dedent("""
        from toolkit import hookimpl

        def refuses(width: int = 4):
            raise ValueError("encoder.width 4 does not suit this data")

        def crashes(width: int = 4):
            return {}["a bug"]

        @hookimpl
        def register_encoders(register):
            register("refuses", refuses)
            register("crashes", crashes)
    """))
    common = [sys.executable, "-m", "toolkit", "train", "--plugins-dir", str(plugin), str(tiny_recipe),
              "eval.evaluators=[]"]
    refused = subprocess.run([*common, "encoder={name: refuses}", "--run-dir", str(tmp_path / "a")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "error: encoder.width 4 does not suit this data")
    assert "Traceback" not in refused.stderr
    crashed = subprocess.run([*common, "encoder={name: crashes}", "--run-dir", str(tmp_path / "b")],
                             capture_output=True, text=True)
    assert crashed.returncode == 1 and "Traceback" in crashed.stderr and "KeyError: 'a bug'" in crashed.stderr


def test_a_plugin_optimizer_is_validated_and_built_with_the_model(plugins, tiny_recipe, tmp_path):
    from toolkit.engine import Trainer

    recipe = load_and_resolve(tiny_recipe, ["optimizer={name: encoder-only-sgd, lr: 0.5}", "eval.evaluators=[]"],
                              plugins)
    assert recipe.block("optimizer") == {"name": "encoder-only-sgd", "lr": 0.5}
    trainer = Trainer(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w"))
    (group,) = trainer.optimizer.param_groups
    assert group["initial_lr"] == 0.5 and len(group["params"]) == len(list(trainer.model.encoder.parameters()))
    with pytest.raises(RecipeError, match="optimizer.lr: expected float"):
        load_and_resolve(tiny_recipe, ["optimizer={name: encoder-only-sgd, lr: fast}"], plugins)
