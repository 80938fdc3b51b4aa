"""``augmentation.device: batch``: the vectorised SimCLR views match the per-item torchvision pipeline.

Parameter distributions are compared with two-sample Kolmogorov-Smirnov statistics and binomial
bounds, from fixed seeds (so the tests are deterministic); operations are compared with
torchvision's functional ones; resume and the CLI are checked end to end on the tiny recipe.
"""

from __future__ import annotations

import math
import subprocess
import sys
from itertools import permutations
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from selfsup_image import batched
from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.batched import BatchedTransform, ViewSettings
from selfsup_image.datasources import JpegNpz
from toolkit.data import BatchPlan, ViewBatches, item_seed, seeded_uniforms
from toolkit.engine import Trainer
from toolkit.interfaces import Batch, stack_views

from conftest import ROOT
from helpers import assert_same_state, kill_at, make_trainer

MINI = ROOT / "data" / "cifar10_mini_jpeg.npz"
N = 4000
SETTINGS = ViewSettings(size=32, scale=(0.08, 1.0), strength=1.0, jitter_prob=0.8, grayscale_prob=0.2,
                        blur_prob=0.5, flip_prob=0.5, solarize_prob=0.2)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic ``sup |F_a - F_b|``."""
    values = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values.contiguous(), values, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values.contiguous(), values, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def assert_same_distribution(ours: torch.Tensor, reference: torch.Tensor, name: str) -> None:
    """Not rejected at the 0.1% level: ``D < 1.95 sqrt((n + m) / (n m))``."""
    n, m = len(ours), len(reference)
    bound = 1.95 * math.sqrt((n + m) / (n * m))
    statistic = ks_statistic(ours.double(), reference.double())
    assert statistic < bound, f"{name}: KS statistic {statistic:.4f} >= {bound:.4f}"


def assert_rate(mask: torch.Tensor, p: float, name: str) -> None:
    """The share of ``True`` is within 4 binomial standard deviations of ``p``."""
    rate = mask.double().mean().item()
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / len(mask)) + 1e-12, f"{name}: rate {rate:.4f}, expected {p}"


def params(settings: ViewSettings = SETTINGS, height: int = 32, width: int = 32) -> batched.ViewParams:
    seeds = torch.tensor([item_seed(0, 0, position) for position in range(N)])
    return BatchedTransform(settings).make_params(seeded_uniforms(seeds, 0, batched.DRAWS), height, width)


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_crop_area_aspect_and_position_match_torchvision(height, width):
    box = params(height=height, width=width).box
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(32, scale=SETTINGS.scale)
    image = [torch.zeros(3, height, width)]
    reference = torch.tensor([[p["top"], p["left"], p["height"], p["width"]]
                              for p in (crop.make_params(image) for _ in range(N))], dtype=torch.float64)
    top, left, h, w = box.double().unbind(1)
    ref_top, ref_left, ref_h, ref_w = reference.unbind(1)
    assert_same_distribution(h * w / (height * width), ref_h * ref_w / (height * width), "area fraction")
    assert_same_distribution((w / h).log(), (ref_w / ref_h).log(), "log aspect ratio")
    assert_same_distribution(top + h / 2, ref_top + ref_h / 2, "centre row")
    assert_same_distribution(left + w / 2, ref_left + ref_w / 2, "centre column")
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()


def test_jitter_factors_and_order_match_torchvision():
    ours = params()
    torch.manual_seed(0)
    jitter = v2.ColorJitter(0.8, 0.8, 0.8, 0.2)
    draws = [jitter.make_params([]) for _ in range(N)]
    names = ["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]
    for column, name in enumerate(names):
        assert_same_distribution(ours.factors[:, column], torch.tensor([d[name] for d in draws]), name)
    reference_order = torch.stack([d["fn_idx"] for d in draws])
    for position in range(4):  # each operation at each position about a quarter of the time, as in torchvision
        for op in range(4):
            assert_rate(ours.order[:, position] == op, 0.25, f"operation {op} at position {position}")
            assert_rate(reference_order[:, position] == op, 0.25, f"torchvision: operation {op} at {position}")
    assert (ours.order.sort(dim=1).values == torch.arange(4)).all(), "every order is a permutation"


def test_blur_sigma_matches_torchvision():
    ours = params().sigma
    torch.manual_seed(0)
    blur = v2.GaussianBlur(3, sigma=(0.1, 2.0))
    reference = torch.tensor([blur.make_params([])["sigma"][0] for _ in range(N)])
    assert_same_distribution(ours[ours > 0], reference, "blur sigma")


def test_probabilities_match_the_settings():
    p = params()
    assert_rate(p.flip, SETTINGS.flip_prob, "flip")
    assert_rate(p.jitter, SETTINGS.jitter_prob, "colour jitter")
    assert_rate(p.gray, SETTINGS.grayscale_prob, "grayscale")
    assert_rate(p.sigma > 0, SETTINGS.blur_prob, "blur")
    assert_rate(p.solarize, SETTINGS.solarize_prob, "solarize")


@pytest.mark.slow
def test_views_have_the_dtype_shape_range_and_statistics_of_the_per_item_pipeline():
    """Means and spreads agree to 0.025 (3 standard errors at 2,000 images, plus the per-item path's
    bias: it truncates to 8 bits after each jitter step, about 0.004 darker)."""
    images = JpegNpz(MINI, limit=2000, on_device=True).images
    kwargs = dict(size=24, scale=(0.2, 1.0), blur_prob=0.5, local_crops=1, local_size=12)
    per_item, batch = SimCLRAugmentation(**kwargs), SimCLRAugmentation(device="batch", **kwargs)
    seeds = torch.tensor([item_seed(0, 0, position) for position in range(len(images))])
    reference = []
    for seed, image in zip(seeds.tolist(), images):
        torch.default_generator.manual_seed(seed)
        reference.append(per_item(image))
    reference_views = [stack_views([views[v] for views in reference]) for v in range(per_item.n_views)]
    views = batch.on_device(Batch(views=batch(images), index=torch.arange(len(images)), seeds=seeds)).views
    for ours, theirs in zip(views, reference_views):
        assert ours.dtype == theirs.dtype == torch.float32 and ours.shape == theirs.shape
        assert ours.min() >= 0 and ours.max() <= 1
        torch.testing.assert_close(ours.mean(dim=(0, 2, 3)), theirs.mean(dim=(0, 2, 3)), atol=0.025, rtol=0)
        torch.testing.assert_close(ours.std(dim=(0, 2, 3)), theirs.std(dim=(0, 2, 3)), atol=0.025, rtol=0)


def test_a_full_crop_without_colour_changes_is_the_image_and_a_flip_mirrors_it():
    image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    u = seeded_uniforms(torch.tensor([1, 2]), 0, batched.DRAWS)
    keep = ViewSettings(16, (1.0, 1.0), 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, ratio=(1.0, 1.0))
    torch.testing.assert_close(BatchedTransform(keep)(image, u), image / 255, atol=1e-6, rtol=0)
    flip = ViewSettings(16, (1.0, 1.0), 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, ratio=(1.0, 1.0))
    torch.testing.assert_close(BatchedTransform(flip)(image, u), image.flip(-1) / 255, atol=1e-6, rtol=0)


def test_colour_operations_match_torchvision_functional_in_each_items_order():
    x = torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([1.4, 0.6, 1.7, 0.15])
    orders = torch.tensor(list(permutations(range(4))))  # all 24 orders
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    got = batched.colour_jitter(x, torch.ones(24, dtype=torch.bool), factors.expand(24, 4), orders)
    for n, order in enumerate(orders.tolist()):
        expected = x[n]
        for op in order:
            expected = ops[op](expected, factors[op].item())
        torch.testing.assert_close(got[n], expected, atol=1e-5, rtol=0)
    untouched = batched.colour_jitter(x, torch.zeros(24, dtype=torch.bool), factors.expand(24, 4), orders)
    assert torch.equal(untouched, x)


def test_blur_grayscale_and_solarize_match_torchvision_functional():
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.3, 1.0, 2.0])
    blurred = batched.gaussian_blur(x, sigma, 5)
    for n in range(3):
        torch.testing.assert_close(blurred[n], TF.gaussian_blur(x[n], [5, 5], [sigma[n].item()] * 2), atol=1e-6,
                                   rtol=0)
    torch.testing.assert_close(batched.grayscale(x).expand_as(x), TF.rgb_to_grayscale(x, 3), atol=1e-6, rtol=0)
    settings = ViewSettings(12, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, ratio=(1.0, 1.0))
    solarized = BatchedTransform(settings)(x, seeded_uniforms(torch.arange(3), 0, batched.DRAWS))
    torch.testing.assert_close(solarized, TF.solarize(x, 0.5), atol=1e-6, rtol=0)


def test_an_items_views_depend_on_its_seed_only_not_on_its_batch():
    augmentation = SimCLRAugmentation(size=16, device="batch", blur_prob=0.5, local_crops=1, local_size=8)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    seeds = torch.tensor([item_seed(3, 1, position) for position in range(8)])
    whole = augmentation.on_device(Batch(views=augmentation(images), index=torch.arange(8), seeds=seeds)).views
    halves = [augmentation.on_device(Batch(views=augmentation(images[s]), index=torch.arange(8)[s], seeds=seeds[s]))
              for s in (slice(0, 4), slice(4, 8))]
    for v, view in enumerate(whole):
        assert torch.equal(view, torch.cat([half.views[v] for half in halves]))
    assert not torch.equal(whole[0], whole[1]), "each view has its own parameters"


def test_a_batch_without_seeds_is_refused_naming_the_recipe_key():
    augmentation = SimCLRAugmentation(size=16, device="batch")
    image = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="augmentation.device: batch"):
        augmentation.on_device(Batch(views=augmentation(image), index=torch.arange(1)))


def test_items_of_different_sizes_need_a_source_size():
    augmentation = SimCLRAugmentation(size=16, device="batch")
    augmentation(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="augmentation.source_size"):
        augmentation(torch.zeros(3, 40, 30, dtype=torch.uint8))
    sized = SimCLRAugmentation(size=16, device="batch", source_size=20)
    assert [v.shape for v in sized(torch.zeros(3, 40, 30, dtype=torch.uint8))] == [(3, 20, 20)] * 2
    with pytest.raises(ValueError, match="augmentation.source_size"):
        SimCLRAugmentation(source_size=20)


def test_a_source_held_as_one_tensor_gives_the_batches_of_the_per_item_path():
    plan = BatchPlan(dataset_size=256, batch_size=64, seed=0)
    augmentation = SimCLRAugmentation(size=16, device="batch")
    per_item = ViewBatches(JpegNpz(MINI, limit=256), augmentation, stack_views, plan)
    stacked = ViewBatches(JpegNpz(MINI, limit=256, on_device=True), augmentation, stack_views, plan)
    assert stacked._stacked and not per_item._stacked
    a, b = per_item[(1, 2, 0)], stacked[(1, 2, 0)]
    assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))
    assert torch.equal(a.index, b.index) and torch.equal(a.labels, b.labels) and torch.equal(a.seeds, b.seeds)


@pytest.mark.parametrize("overrides", [["augmentation.device=batch"],
                                       ["augmentation.device=batch", "data.on_device=true"]])
def test_resume_after_a_kill_is_exact_with_batched_augmentation(tiny_recipe, plugins, tmp_path, overrides):
    straight = make_trainer(tiny_recipe, plugins, tmp_path / "straight", "trainer.checkpoint_every=3", *overrides)
    straight.fit()
    kill_at(5, make_trainer(tiny_recipe, plugins, tmp_path / "killed", "trainer.checkpoint_every=3", *overrides),
            plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=open("/dev/null", "w"))
    assert resumed.step == 3
    resumed.fit()
    assert resumed.step == straight.step == 8
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())


@pytest.mark.slow
def test_training_with_batched_augmentation_runs_through_the_cli(tiny_recipe, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "toolkit", "train", str(tiny_recipe), "augmentation.device=batch",
                             "data.on_device=true", "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "step 8/8" in result.stderr and "knn_top1" in result.stderr
    assert (Path(run_dir) / "encoder").is_dir()

