"""The pairs plugin through the engine: the recipes validate, a killed tiny CLIP run resumes exactly,
and a LiT-style SigLIP run trains with its text tower locked, evaluates retrieval and zero-shot,
and exports a two-tower encoder whose towers each load alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup_pairs.encoders import TwoTowerEncoder
from toolkit import load_encoder, load_eval_transform
from toolkit.engine import Trainer
from toolkit.recipe import load_and_resolve

from conftest import RECIPES
from helpers import assert_same_state, kill_at, make_trainer
from test_pairs_plugin import write_pairs_npz

TINY = RECIPES / "tiny" / "clip.yaml"


@pytest.mark.parametrize("name", ["clip-flickr8k.yaml", "lit-flickr8k.yaml", "siglip-flickr8k.yaml", "tiny/clip.yaml"])
def test_pairs_recipes_validate(name, plugins):
    recipe = load_and_resolve(RECIPES / name, [], plugins).values
    assert recipe["encoder"]["name"] == "two-tower" and recipe["objective"]["name"] in ("clip", "siglip")


def test_a_killed_clip_run_resumes_exactly(plugins, tmp_path):
    overrides = [f"data.path={write_pairs_npz(tmp_path / 'pairs.npz')}", "schedule.max_steps=6",
                 "trainer.checkpoint_every=3", "trainer.batch_size=8", "eval.evaluators=[]"]
    straight = make_trainer(TINY, plugins, tmp_path / "straight", *overrides)
    straight.fit()
    kill_at(5, make_trainer(TINY, plugins, tmp_path / "killed", *overrides), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=open("/dev/null", "w"))
    assert resumed.step == 3
    resumed.fit()
    assert straight.step == resumed.step == 6
    state = resumed.model.state_dict()
    assert "objective.logit_scale" in state and any(key.startswith("encoder.text.model.") for key in state)
    assert_same_state(straight.model.state_dict(), state)


def write_labelled_images(path: Path) -> Path:
    generator = np.random.default_rng(1)
    np.savez(path, x_test=generator.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
             y_test=np.arange(12) % 3, x_train=np.zeros((1, 16, 16, 3), np.uint8), y_train=np.zeros(1, np.int64))
    return path


def test_a_locked_text_siglip_run_evaluates_and_exports_each_tower(plugins, tmp_path):
    images = write_labelled_images(tmp_path / "labelled.npz")
    run = make_trainer(TINY, plugins, tmp_path / "run", f"data.path={write_pairs_npz(tmp_path / 'pairs.npz')}",
                       "objective={name: siglip}", "encoder.lock=text", "schedule.max_steps=2",
                       "optimizer.text_lr_scale=0.1",
                       "eval.evaluators=[{name: retrieval}, {name: zero-shot, classes: [red, green, blue], data: "
                       f"{{name: image-npz, path: {images}, split: test}}}}]")
    text_before = {k: v.clone() for k, v in run.encoder.text.state_dict().items()}
    metrics = run.fit()
    assert run.step == 2 and not run.encoder.text.training and run.encoder.image.training
    assert_same_state(text_before, run.encoder.text.state_dict())
    assert {"i2t_r1", "t2i_r10", "rsum", "zero_shot_top1"} <= metrics.keys() and 0 <= metrics["t2i_r10"] <= 1

    export = tmp_path / "run" / "encoder"
    both = load_encoder(export)
    image_tower, text_tower = load_encoder(export / "towers" / "image"), load_encoder(export / "towers" / "text")
    assert isinstance(both, TwoTowerEncoder) and type(image_tower).__name__ == "ResNet18"
    pixels = load_eval_transform(export / "towers" / "image")(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8))
    captions = ["a dog runs on the beach", "a girl in red"]
    with torch.no_grad():
        assert torch.allclose(image_tower(pixels[None]), both.image(pixels[None]), atol=1e-6)
        assert torch.allclose(text_tower(text_tower.collate()(captions)), both.text(both.collate()(captions)))
    assert json.loads((export / "towers" / "image" / "encoder.json").read_text())["plugins"] == ["image"]
    from transformers import AutoModel

    hugging_face = AutoModel.from_pretrained(export / "towers" / "text" / "huggingface")
    assert hugging_face.config.hidden_size == text_tower.output_dim == 32
