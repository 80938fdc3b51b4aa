"""The timm encoder, MAE and MoCo v3 (selfsup_image.timm_encoders, .mae, .mocov3): conformance, local
weights, exports that load back in selfsup and in plain timm, MAE's masking and loss, MoCo v3's loss
against a naive loop, both objectives on one and two processes, and their tiny recipes through the engine."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from selfsup_image.mae import MAE, masked_mse, normalize_patches, patchify, random_masking
from selfsup_image.mocov3 import MoCoV3
from selfsup_image.timm_encoders import TimmEncoder
from toolkit import load_encoder, load_eval_transform
from toolkit.engine import Trainer
from toolkit.export import export_encoder
from toolkit.interfaces import Batch
from toolkit.projectors import IdentityProjector, MLPProjector
from toolkit.recipe import load_and_resolve
from toolkit.testing import check_encoder, check_objective, check_objective_distributed

from conftest import RECIPES
from helpers import assert_same_state, kill_at, make_trainer

timm = pytest.importorskip("timm")  # the [vit] extra
QUIET = open(os.devnull, "w")
TINY_VIT = {"model": "vit_small_patch16_224", "image_size": 16, "patch_size": 4,
            "options": {"embed_dim": 32, "depth": 2, "num_heads": 2}}
"""16 patches of 4x4 pixels, width 32: what the tiny recipes train."""
TINY_MAE = {"mask_ratio": 0.75, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}


def tiny_vit(**changes) -> TimmEncoder:
    torch.manual_seed(0)
    return TimmEncoder(**{**TINY_VIT, **changes})


def images(n: int = 8, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def one_view(n: int = 8) -> Batch:
    return Batch(views=[images(n)], index=torch.arange(n), seeds=torch.arange(100, 100 + n))


def two_views(n: int = 8) -> Batch:
    return Batch(views=[images(n), images(n, seed=1)], index=torch.arange(n), seeds=torch.arange(n))


def plain_features(model: torch.nn.Module, x: Tensor) -> Tensor:
    """What timm itself gives for ``x`` already normalised: pooled features without a classifier."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


# ---------------------------------------------------------------- the timm encoder


def test_a_timm_vit_conforms_and_pools_like_timm():
    h = check_encoder(TimmEncoder, {**TINY_VIT, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)},
                      example=list(images(4)))
    assert h.shape == (4, 32)
    encoder = tiny_vit().eval()
    with torch.no_grad():
        assert torch.equal(encoder(images(4)), plain_features(encoder.model, encoder.normalize(images(4))))


def test_a_timm_cnn_conforms_but_has_no_patch_tokens():
    check_encoder(TimmEncoder, {"model": "resnet10t"}, example=list(images(2)))
    with pytest.raises(ValueError, match="encoder.model: patch_tokens needs a Vision Transformer.*'resnet10t'"):
        TimmEncoder("resnet10t").patch_tokens(images(2))
    with pytest.raises(ValueError, match="encoder.model: .*Vision Transformer"):
        MAE(TimmEncoder("resnet10t"))


def test_encoding_the_patch_tokens_gives_forward_features():
    encoder = tiny_vit().eval()
    x = images(3)
    with torch.no_grad():
        tokens = encoder.patch_tokens(x)
        assert tokens.shape == (3, encoder.num_patches, 32) and encoder.num_patches == 16
        assert encoder.grid_size == (4, 4) and encoder.patch_size == 4 and encoder.num_prefix_tokens == 1
        encoded = encoder.encode_tokens(tokens)
        assert torch.allclose(encoded, encoder.model.forward_features(encoder.normalize(x)), atol=1e-6)
        assert encoder.encode_tokens(tokens[:, [3, 7]]).shape == (3, 1 + 2, 32)  # any subset


def test_freeze_patch_embed_leaves_the_patch_projection_out_of_training():
    frozen = tiny_vit(freeze_patch_embed=True)
    assert {n for n, p in frozen.named_parameters() if not p.requires_grad} == {
        "model.patch_embed.proj.weight", "model.patch_embed.proj.bias"}
    with pytest.raises(ValueError, match="encoder.freeze_patch_embed"):
        TimmEncoder("resnet10t", freeze_patch_embed=True)


def test_options_that_the_encoder_sets_itself_are_refused_with_the_key():
    with pytest.raises(ValueError, match="encoder.options.img_size: .*set encoder.image_size"):
        TimmEncoder(options={"img_size": 32})
    with pytest.raises(ValueError, match="encoder: timm model 'resnet10t' does not take one of \\['img_size'\\]"):
        TimmEncoder("resnet10t", image_size=32)
    with pytest.raises(ValueError, match="did you mean vit_small_patch16_224"):
        TimmEncoder("vit_smal_patch16_224")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_load_a_local_timm_state_dict_without_its_classifier(tmp_path, suffix):
    torch.manual_seed(3)
    trained = timm.create_model("vit_small_patch16_224", img_size=16, patch_size=4, num_classes=10,
                                **TINY_VIT["options"]).eval()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file(trained.state_dict(), path)
    else:
        torch.save({"state_dict": trained.state_dict()}, path)
    encoder = tiny_vit(weights=path).eval()
    with torch.no_grad():
        assert torch.equal(encoder(images(2)), plain_features(trained, encoder.normalize(images(2))))


def test_weights_are_resampled_to_the_image_size_or_refused_naming_the_key(tmp_path):
    options = TINY_VIT["options"]
    save_file(timm.create_model("vit_small_patch16_224", img_size=32, patch_size=4, **options).state_dict(),
              tmp_path / "at32.safetensors")
    encoder = tiny_vit(weights=tmp_path / "at32.safetensors")  # 64 position embeddings resampled to 16
    assert encoder.model.pos_embed.shape == (1, 1 + 16, 32)
    save_file(timm.create_model("vit_small_patch16_224", img_size=16, patch_size=4, **{**options, "depth": 1})
              .state_dict(), tmp_path / "shallow.safetensors")
    with pytest.raises(ValueError, match="encoder.weights: .*shallow.safetensors does not fit this model"):
        tiny_vit(weights=tmp_path / "shallow.safetensors")
    with pytest.raises(FileNotFoundError, match="encoder.weights: .*missing.pth does not exist"):
        tiny_vit(weights=tmp_path / "missing.pth")


def test_an_export_loads_back_in_selfsup_and_in_plain_timm(tmp_path, plugins):
    block = {"name": "timm", **TINY_VIT, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    encoder = tiny_vit(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()
    out = export_encoder(encoder, block, {"name": "simclr", "size": 16, "eval_crop_fraction": 1.0},
                         tmp_path / "export", plugins)
    x = images(3)
    with torch.no_grad():
        expected = encoder(x)
        assert torch.equal(load_encoder(out)(x), expected)
        config = json.loads((out / "timm" / "config.json").read_text())
        assert config["architecture"] == "vit_small_patch16_224" and config["pretrained_cfg"]["crop_pct"] == 1.0
        inputs = config["pretrained_cfg"]
        normalised = (x - torch.tensor(inputs["mean"]).view(1, 3, 1, 1)) / torch.tensor(inputs["std"]).view(1, 3, 1, 1)
        plain = timm.create_model(config["architecture"], **config["model_args"]).eval()
        plain.load_state_dict(load_file(out / "timm" / "model.safetensors"))
        assert torch.allclose(plain(normalised), expected, atol=1e-6)
        local = timm.create_model(f"local-dir:{out / 'timm'}", pretrained=True).eval()
        assert torch.allclose(local(normalised), expected, atol=1e-6)


# ---------------------------------------------------------------- MAE


def test_masking_keeps_exactly_the_visible_share_drawn_per_item_from_its_seed():
    mae = MAE(tiny_vit(), **{**TINY_MAE, "mask_ratio": 0.6})
    assert mae.keep == 16 - round(16 * 0.6) == 6
    batch = one_view()
    visible, mask = random_masking(mae.noise(batch, 16, torch.device("cpu")), mae.keep)
    assert visible.shape == (8, 6) and torch.equal(mask.sum(dim=1), torch.full((8,), 10.0))
    assert torch.equal(mask.gather(1, visible), torch.zeros(8, 6))
    assert len({tuple(sorted(row.tolist())) for row in visible}) == 8  # every item its own mask
    shuffled = Batch(views=batch.views, index=batch.index.flip(0), seeds=batch.seeds.flip(0))
    assert torch.equal(random_masking(mae.noise(shuffled, 16, torch.device("cpu")), 6)[1], mask.flip(0))


def test_the_encoder_sees_only_the_visible_patches_and_the_loss_only_the_masked_ones():
    encoder, batch = tiny_vit(), one_view(2)
    mae = MAE(encoder, **TINY_MAE)
    x = batch.views[0]
    visible, mask = random_masking(mae.noise(batch, 16, x.device), mae.keep)
    masked_patch, visible_patch = int((mask[0] == 1).nonzero()[0]), int(visible[0, 0])

    def changed(patch: int) -> Tensor:
        row, column = divmod(patch, 4)
        y = x.clone()
        y[0, :, row * 4:(row + 1) * 4, column * 4:(column + 1) * 4] = 1 - y[0, :, row * 4:(row + 1) * 4,
                                                                            column * 4:(column + 1) * 4]
        return y

    with torch.no_grad():
        prediction = mae.reconstruct(x, visible, encoder)
        assert torch.equal(mae.reconstruct(changed(masked_patch), visible, encoder), prediction)
        assert not torch.allclose(mae.reconstruct(changed(visible_patch), visible, encoder), prediction)
        loss = mae(batch, encoder, IdentityProjector(32)).loss
        assert mae(Batch(views=[changed(masked_patch)], index=batch.index, seeds=batch.seeds), encoder,
                   IdentityProjector(32)).loss != loss  # the same prediction against another target
    target = torch.randn(2, 16, 48)
    moved_visible, moved_masked = target.clone(), target.clone()
    moved_visible[0, visible_patch] += 5
    moved_masked[0, masked_patch] += 5
    assert masked_mse(prediction, moved_visible, mask) == masked_mse(prediction, target, mask)
    assert masked_mse(prediction, moved_masked, mask) != masked_mse(prediction, target, mask)


def test_the_norm_pix_target_matches_a_naive_loop():
    x, p = images(2), 4
    target = normalize_patches(patchify(x, p))
    for n in range(2):
        for row in range(4):
            for column in range(4):
                pixels = x[n, :, row * p:(row + 1) * p, column * p:(column + 1) * p].permute(1, 2, 0).flatten()
                mean, var = pixels.mean(), pixels.var(unbiased=True)
                assert torch.allclose(target[n, row * 4 + column], (pixels - mean) / math.sqrt(var + 1e-6), atol=1e-5)


def test_mae_conforms_and_resumes_exactly():
    output = check_objective(MAE, TINY_MAE, one_view(), tiny_vit(), IdentityProjector(32))
    assert output.loss > 0


def test_mae_trains_the_same_on_two_processes():
    check_objective_distributed(MAE, TINY_MAE, one_view(), tiny_vit(), IdentityProjector(32))


# ---------------------------------------------------------------- MoCo v3


def test_mocov3_loss_matches_a_naive_loop():
    encoder, batch, tau = tiny_vit(), two_views(), 0.2
    projector = MLPProjector(32, 32, 16, layers=3, output_batch_norm=True)
    mocov3 = MoCoV3(encoder, projector, temperature=tau, predictor_hidden_dim=16)
    with torch.no_grad():
        loss = mocov3(batch, encoder, projector).loss
        q = [torch.nn.functional.normalize(mocov3.predictor(projector(encoder(x))), dim=1) for x in batch.views]
        k = [torch.nn.functional.normalize(mocov3.target(x), dim=1) for x in batch.views]
    expected = 0.0
    for query, keys in ((q[0], k[1]), (q[1], k[0])):
        for i in range(len(query)):
            logits = [float(query[i] @ keys[j]) / tau for j in range(len(keys))]
            expected += 2 * tau * -(logits[i] - math.log(sum(math.exp(s) for s in logits))) / len(query)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    mocov3.after_step(5, 10, encoder, projector)
    assert float(mocov3.target.momentum) == pytest.approx(1 - 0.01 * (math.cos(math.pi * 4 / 10) + 1) / 2)


def test_mocov3_conforms_and_resumes_exactly():
    check_objective(MoCoV3, {"predictor_hidden_dim": 16}, two_views(), tiny_vit(),
                    MLPProjector(32, 32, 16, layers=3, output_batch_norm=True))


def test_mocov3_trains_the_same_on_two_processes():
    check_objective_distributed(MoCoV3, {"predictor_hidden_dim": 16, "predictor_batch_norm": False}, two_views(),
                                tiny_vit(), MLPProjector(32, 32, 16, batch_norm=False))


# ---------------------------------------------------------------- the tiny recipes through the engine


@pytest.mark.parametrize("name", ["mae", "mocov3"])
def test_the_tiny_recipe_trains_and_exports_an_encoder_of_full_images(name, plugins, tmp_path):
    recipe = load_and_resolve(RECIPES / "tiny" / f"{name}.yaml", ["trainer.log_every=100"], plugins)
    trainer = Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=QUIET)
    patch_projection = trainer.encoder.model.patch_embed.proj.weight.detach().clone()
    metrics = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "train") and "knn_top1" in metrics
    frozen = name == "mocov3"  # MoCo v3's recipe freezes the random patch projection
    assert torch.equal(trainer.encoder.model.patch_embed.proj.weight, patch_projection) == frozen
    encoder, transform = load_encoder(tmp_path / "run" / "encoder"), load_eval_transform(tmp_path / "run" / "encoder")
    full = torch.stack([transform(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)) for _ in range(3)])
    with torch.no_grad():
        assert encoder(full).shape == (3, 32)
        assert torch.equal(encoder(full), trainer.encoder.eval()(full))
    assert (tmp_path / "run" / "encoder" / "timm" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["mae", "mocov3"])
def test_a_killed_run_resumes_exactly(name, plugins, tmp_path):
    """Masks drawn from the items' seeds, the decoder, the key encoder and its momentum all resume."""
    recipe = RECIPES / "tiny" / f"{name}.yaml"
    straight = make_trainer(recipe, plugins, tmp_path / "straight", "eval.evaluators=[]")
    straight.fit()
    kill_at(3, make_trainer(recipe, plugins, tmp_path / "killed", "eval.evaluators=[]"), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=QUIET)
    assert resumed.step == 2  # the tiny recipes checkpoint every 2 steps
    resumed.fit()
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
