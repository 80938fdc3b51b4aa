"""Components that cannot work together are one `recipe validate` error naming both and a fix."""

from __future__ import annotations

import io

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.compatibility import Contract, IncompatibleComponents, contract_of
from toolkit.engine import Trainer
from toolkit.recipe import load_and_resolve

from conftest import RECIPES
from helpers import write_wav


@pytest.mark.parametrize("objective", ["nt-xent", "moco", "byol", "simsiam"])
def test_image_objectives_on_text_name_both_components_and_the_text_objective(plugins, objective):
    with pytest.raises(IncompatibleComponents) as error:
        load_and_resolve(RECIPES / "simcse-tiny.yaml", [f"objective={{name: {objective}}}", "projector={name: mlp}"],
                         plugins)
    message = str(error.value)
    assert f"objective {objective} takes tensor batches" in message
    assert "encoder hf-transformer gives token dicts" in message and "use objective simcse" in message


def test_an_image_encoder_on_text_suggests_the_text_encoder(plugins):
    with pytest.raises(IncompatibleComponents, match="encoder resnet18 takes images .* augmentation simcse gives "
                                                     "strings; with augmentation simcse use encoder hf-transformer"):
        load_and_resolve(RECIPES / "simcse-tiny.yaml", ["encoder={name: resnet18}", "objective={name: nt-xent}"],
                         plugins)


def test_byol_on_one_view_of_audio_says_to_set_n_views(plugins):
    with pytest.raises(IncompatibleComponents, match="objective byol needs at least 2 views per item, but "
                                                     "augmentation cpc-audio makes 1; set augmentation.n_views: 2"):
        load_and_resolve(RECIPES / "cpc-fsdd.yaml", ["objective={name: byol}", "projector={name: mlp}"], plugins)


def test_cpc_with_an_encoder_without_a_context_network_is_refused(plugins):
    with pytest.raises(IncompatibleComponents, match="objective cpc takes a CPC encoder"):
        load_and_resolve(RECIPES / "tiny.yaml", ["objective={name: cpc}"], plugins)


def test_moco_with_multi_crop_is_refused_and_temporal_tcn_needs_three_views(plugins):
    with pytest.raises(IncompatibleComponents, match="moco needs 2 views per item, but augmentation simclr makes 4"):
        load_and_resolve(RECIPES / "tiny.yaml", ["objective={name: moco}", "augmentation.local_crops=2"], plugins)
    with pytest.raises(IncompatibleComponents, match="temporal-contrast needs 3 views .* temporal makes 2"):
        load_and_resolve(RECIPES / "tiny" / "temporal.yaml", ["objective.tcn_weight=0.5",
                                                              "augmentation.tcn_margin=null"], plugins)


def test_recipe_validate_prints_the_mismatch_as_one_error_line(capsys):
    status = main(["recipe", "validate", str(RECIPES / "simcse-tiny.yaml"), "objective={name: byol}",
                   "projector={name: mlp}"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and error.count("\n") == 0 and error.startswith("error: ") and "simcse" in error


def test_every_shipped_recipe_is_compatible(plugins):
    for recipe in sorted(RECIPES.glob("*.yaml")) + sorted((RECIPES / "tiny").glob("*.yaml")):
        load_and_resolve(recipe, [], plugins)


def test_contracts_can_depend_on_parameters(plugins):
    simclr = plugins.get("augmentation", "simclr").factory
    assert contract_of(simclr, {"n_views": 2, "local_crops": 6}).views == 8
    assert contract_of(plugins.get("encoder", "resnet18").factory, {}) == Contract({"image"}, {"tensor"})


def test_byol_trains_on_two_views_of_audio(tmp_path, plugins):
    for i in range(8):
        write_wav(tmp_path / "clips" / f"{i}.wav", np.sin(np.arange(2400) * (0.05 + 0.01 * i)) * 8000)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{name: audio-folder, path: {tmp_path / 'clips'}}}
augmentation: {{name: cpc-audio, window: 1600, n_views: 2}}
encoder: {{name: cpc-audio, sample_rate: 8000, channels: 8, hidden_dim: 8}}
projector: {{name: mlp, hidden_dim: 16, output_dim: 8}}
objective: {{name: byol}}
schedule: {{epochs: 2}}
trainer: {{batch_size: 4, device: cpu}}
""")
    trainer = Trainer.from_recipe(load_and_resolve(recipe, [], plugins), plugins, tmp_path / "run", log=io.StringIO())
    trainer.fit()
    trainer.close()
    assert trainer.step == 4  # 8 clips, no evaluators so none held out: 2 steps of 4 per epoch
