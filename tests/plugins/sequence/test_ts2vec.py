"""TS2Vec in the sequence plugin: the dilated conv encoder and the hierarchical contrastive loss."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from selfsup_sequence.encoders import CPCSeriesEncoder, pad_with_nan
from selfsup_sequence.ts2vec import (
    DilatedConvEncoder,
    TS2Vec,
    draw_crops,
    hierarchical_contrastive_loss,
    instance_contrastive_loss,
    temporal_contrastive_loss,
)
from toolkit import load_encoder, load_eval_transform
from toolkit.interfaces import Batch
from toolkit.projectors import IdentityProjector
from toolkit.recipe import load_and_resolve
from toolkit.testing import check_encoder, check_objective, check_objective_distributed

from conftest import RECIPES, needs_shared_data

TINY = {"hidden_dim": 8, "output_dim": 6, "depth": 2}


def series_batch(n: int = 4, channels: int = 1, length: int = 24) -> Batch:
    return Batch(views=[torch.randn(n, channels, length)], index=torch.arange(n))


# the losses, against naive loops

def naive_pair_loss(rows: list[torch.Tensor]) -> torch.Tensor:
    """Rows ``a`` and ``a + M`` of ``2M`` vectors are pairs: the mean over anchors of
    ``-log(exp(r_a . r_partner) / sum_{c != a} exp(r_a . r_c))``."""
    m = len(rows) // 2
    terms = []
    for a in range(2 * m):
        partner = (a + m) % (2 * m)
        others = torch.stack([rows[a] @ rows[c] for c in range(2 * m) if c != a])
        terms.append(-(rows[a] @ rows[partner] - torch.logsumexp(others, dim=0)))
    return torch.stack(terms).mean()


def naive_instance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    b, t = z1.shape[:2]
    if b == 1:
        return torch.tensor(0.0)
    return torch.stack([naive_pair_loss([z1[i, s] for i in range(b)] + [z2[i, s] for i in range(b)])
                        for s in range(t)]).mean()


def naive_temporal(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    b, t = z1.shape[:2]
    if t == 1:
        return torch.tensor(0.0)
    return torch.stack([naive_pair_loss([z1[i, s] for s in range(t)] + [z2[i, s] for s in range(t)])
                        for i in range(b)]).mean()


def naive_halve(z: torch.Tensor) -> torch.Tensor:
    """Max over consecutive pairs of steps, an odd last step dropped."""
    return torch.stack([torch.maximum(z[:, 2 * s], z[:, 2 * s + 1]) for s in range(z.shape[1] // 2)], dim=1)


def naive_hierarchical(z1: torch.Tensor, z2: torch.Tensor, alpha: float, temporal_unit: int) -> torch.Tensor:
    total, terms, scale = torch.tensor(0.0), 0, 0
    while z1.shape[1] > 1:
        total = total + alpha * naive_instance(z1, z2)
        if scale >= temporal_unit:
            total = total + (1 - alpha) * naive_temporal(z1, z2)
        terms, scale = terms + 1, scale + 1
        z1, z2 = naive_halve(z1), naive_halve(z2)
    return (total + alpha * naive_instance(z1, z2)) / (terms + 1)


@pytest.mark.parametrize("b, t", [(3, 5), (1, 4), (2, 1)])
def test_instance_loss_matches_a_naive_loop(b, t):
    torch.manual_seed(0)
    z1, z2 = torch.randn(b, t, 4), torch.randn(b, t, 4)
    assert torch.allclose(instance_contrastive_loss(z1, z2), naive_instance(z1, z2), atol=1e-5)


@pytest.mark.parametrize("b, t", [(3, 5), (2, 1), (1, 3)])
def test_temporal_loss_matches_a_naive_loop(b, t):
    torch.manual_seed(0)
    z1, z2 = torch.randn(b, t, 4), torch.randn(b, t, 4)
    assert torch.allclose(temporal_contrastive_loss(z1, z2), naive_temporal(z1, z2), atol=1e-5)


@pytest.mark.parametrize("t, alpha, temporal_unit", [(11, 0.5, 0), (8, 0.3, 2), (1, 0.5, 0), (6, 1.0, 0), (7, 0.0, 5)])
def test_hierarchical_loss_matches_a_naive_loop(t, alpha, temporal_unit):
    torch.manual_seed(0)
    z1, z2 = torch.randn(3, t, 4), torch.randn(3, t, 4)
    expected = naive_hierarchical(z1, z2, alpha, temporal_unit)
    assert torch.allclose(hierarchical_contrastive_loss(z1, z2, alpha, temporal_unit), expected, atol=1e-5)


# the encoder

def test_default_receptive_field_follows_the_formula():
    assert DilatedConvEncoder().receptive_field == 1 + 2 * 2 * (2**11 - 1) == 8189


def input_steps_seen(encoder: DilatedConvEncoder, t: int, length: int = 60) -> list[int]:
    """The input steps whose change reaches output step ``t`` (nonzero gradient)."""
    x = torch.randn(1, 1, length, requires_grad=True)
    encoder.encode(x)[0, t].sum().backward()
    return (x.grad[0, 0] != 0).nonzero().flatten().tolist()


@pytest.mark.parametrize("causal", [False, True])
def test_each_step_sees_exactly_its_receptive_field(causal):
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(causal=causal, **TINY).eval()
    field, t = encoder.receptive_field, 30
    assert field == 29
    first = t - field + 1 if causal else t - (field - 1) // 2
    last = t if causal else t + (field - 1) // 2
    assert input_steps_seen(encoder, t) == list(range(first, last + 1))


@pytest.mark.parametrize("causal", [False, True])
def test_only_a_causal_encoder_keeps_past_outputs_when_the_future_changes(causal):
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(causal=causal, pooling="sequence", **TINY).eval()
    x, t = torch.randn(2, 1, 50), 20
    changed = x.clone()
    changed[:, :, t + 1:] += 3.0
    with torch.no_grad():
        before, after = encoder(x), encoder(changed)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6) == causal
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("standardize", [False, True])
def test_a_padded_item_pools_to_the_features_it_gets_alone(pooling, standardize):
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(in_channels=2, pooling=pooling, standardize=standardize, **TINY).eval()
    short, long = torch.randn(2, 23), torch.randn(2, 70)
    with torch.no_grad():
        together = encoder(pad_with_nan([long, short]))
        alone = encoder(short[None])
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_a_masked_step_reads_as_a_missing_one():
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(**TINY).eval()
    x = torch.randn(2, 1, 30)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[:, 7] = True
    missing = x.clone()
    missing[:, :, 7] = math.nan
    changed = x.clone()
    changed[:, :, 7] = 100.0
    with torch.no_grad():
        hidden = encoder.encode(x, mask)
        assert torch.allclose(hidden, encoder.encode(missing), atol=1e-6)
        assert torch.allclose(hidden, encoder.encode(changed, mask), atol=1e-6)
        assert not torch.allclose(hidden, encoder.encode(x))


def test_representation_dropout_acts_in_training_only():
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(dropout=0.5, **TINY)
    x = torch.randn(2, 1, 30)
    assert (encoder.encode(x) == 0).float().mean() > 0.3
    assert (encoder.eval().encode(x) == 0).float().mean() < 0.01


@pytest.mark.parametrize("params", [{**TINY, "in_channels": 3}, {**TINY, "in_channels": 3, "pooling": "sequence"},
                                    {**TINY, "in_channels": 3, "causal": True, "pooling": "mean"}])
def test_encoder_conforms(params):
    check_encoder(DilatedConvEncoder, params, [torch.randn(3, 40), torch.randn(3, 25), torch.randn(3, 33)])


def test_encoder_names_the_channel_mismatch():
    with pytest.raises(ValueError, match="in_channels"):
        DilatedConvEncoder(**TINY).encode(torch.randn(2, 6, 50))


# the objective

def test_crops_overlap_on_the_same_steps_and_stay_inside_the_series():
    torch.manual_seed(0)
    for _ in range(50):
        crops = draw_crops(5, 40, temporal_unit=1, max_train_length=32)
        steps = torch.arange(40.0).expand(5, 1, 40)
        first, second = crops.views(steps)
        assert crops.crop >= 4 and crops.length == 32
        assert torch.equal(first[:, :, -crops.crop:], second[:, :, : crops.crop])
        assert first.min() >= crops.start and second.max() < crops.start + 32
        hide_first, hide_second = crops.masks()
        assert hide_first.shape == first[:, 0].shape and hide_second.shape == second[:, 0].shape


def test_loss_is_the_hierarchical_loss_of_the_two_crops_overlap():
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(dropout=0.0, **TINY)
    batch = series_batch(length=30)
    torch.manual_seed(5)
    crops = draw_crops(4, 30, temporal_unit=0, mask_prob=0.5)
    first, second = crops.views(batch.views[0])
    hide_first, hide_second = crops.masks()
    z1 = encoder.encode(first, hide_first)[:, -crops.crop:]
    z2 = encoder.encode(second, hide_second)[:, : crops.crop]
    torch.manual_seed(5)
    output = TS2Vec(encoder=encoder, alpha=0.3)(batch, encoder, None)
    assert torch.allclose(output.loss, hierarchical_contrastive_loss(z1, z2, alpha=0.3), atol=1e-6)
    assert torch.allclose(output.loss, 0.3 * output.metrics["ts2vec_instance"]
                          + 0.7 * output.metrics["ts2vec_temporal"], atol=1e-6)


def test_objective_conforms():
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(**TINY)
    output = check_objective(TS2Vec, {"max_train_length": 20}, series_batch(), encoder, IdentityProjector(input_dim=6))
    assert set(output.metrics) == {"ts2vec_instance", "ts2vec_temporal"}


def test_two_processes_train_as_one_with_the_whole_batch():
    torch.manual_seed(0)
    encoder = DilatedConvEncoder(in_channels=2, dropout=0.0, **TINY)  # dropout masks are drawn per process
    check_objective_distributed(TS2Vec, {"temporal_unit": 1}, series_batch(channels=2), encoder,
                                IdentityProjector(input_dim=6))


def test_objective_names_an_encoder_without_a_masked_encode():
    with pytest.raises(ValueError, match="encoder.*encode\\(x, mask\\).*CPCSeriesEncoder"):
        TS2Vec(encoder=CPCSeriesEncoder())


def test_objective_asks_for_longer_windows_than_the_shortest_crop():
    encoder = DilatedConvEncoder(**TINY)
    with pytest.raises(ValueError, match="augmentation.window"):
        TS2Vec(encoder=encoder, temporal_unit=3)(series_batch(length=12), encoder, None)


# recipes and training

TS2VEC_RECIPES = ["ts2vec-ucr-gunpoint.yaml", "ts2vec-ucr-basicmotions.yaml", "tiny/ts2vec.yaml"]


@pytest.mark.parametrize("name", TS2VEC_RECIPES)
def test_ts2vec_recipes_validate(name, plugins):
    recipe = load_and_resolve(RECIPES / name, [], plugins)
    assert recipe.block("objective")["name"] == recipe.block("encoder")["name"] == "ts2vec"


def test_ts2vec_objective_refuses_a_cpc_encoder_in_a_recipe(plugins):
    with pytest.raises(Exception, match="objective ts2vec.*encoder cpc-series"):
        load_and_resolve(RECIPES / "tiny" / "ts2vec.yaml", ["encoder={name: cpc-series}"], plugins)


@needs_shared_data
def test_selfsup_command_trains_the_tiny_recipe_and_the_export_pools_padded_series(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "toolkit", "train", str(RECIPES / "tiny" / "ts2vec.yaml"),
                             "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ts2vec_temporal" in result.stderr and "linear_top1" in result.stderr
    encoder, transform = load_encoder(run_dir / "encoder"), load_eval_transform(run_dir / "encoder")
    short = torch.randn(1, 90)
    series = [torch.randn(1, 150), torch.cat([short, torch.full((1, 60), math.nan)], dim=1)]
    with torch.no_grad():
        features = encoder(encoder.collate()([transform(x) for x in series]))
        alone = encoder(transform(short)[None])
    assert features.shape == (2, 16) and torch.isfinite(features).all()
    assert torch.allclose(features[1], alone[0], atol=1e-5)
