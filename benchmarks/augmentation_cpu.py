"""SimCLR views per item (``augmentation.device: cpu``) vs per batch (``device: batch``) on the CPU.

Both sides make ``n_views`` views of the same ``--batch`` CIFAR-10 images (the bundled subset,
32x32) with the same settings, drawing from the same position-keyed item seeds as training does:
the per-item side calls torchvision once per item under its seeded generator (what a data-loader
worker does), the batched side stacks the items and runs ``on_device`` once. The sides alternate
``--repeats`` times; medians of items/s (one item = all its views) are printed as JSON.

    python benchmarks/augmentation_cpu.py                        # CIFAR settings (no blur), 1 thread
    python benchmarks/augmentation_cpu.py --blur-prob 0.5 --solarize-prob 0.2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.datasources import JpegNpz
from toolkit.data import item_seed
from toolkit.interfaces import Batch

ROOT = Path(__file__).resolve().parent.parent


def per_item(augmentation: SimCLRAugmentation, images: torch.Tensor, seeds: list[int]) -> None:
    for seed, image in zip(seeds, images):
        torch.default_generator.manual_seed(seed)
        augmentation(image)


def batched(augmentation: SimCLRAugmentation, images: torch.Tensor, seeds: list[int]) -> None:
    batch = Batch(views=augmentation(images), index=torch.arange(len(images)), seeds=torch.tensor(seeds))
    augmentation.on_device(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--blur-prob", type=float, default=0.0)
    parser.add_argument("--solarize-prob", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = JpegNpz(ROOT / "data" / "cifar10_mini_jpeg.npz", limit=args.batch, on_device=True).images
    seeds = [item_seed(0, 0, position) for position in range(len(images))]
    settings = dict(size=args.size, scale=(0.2, 1.0), blur_prob=args.blur_prob, solarize_prob=args.solarize_prob)
    sides = {"per_item": (per_item, SimCLRAugmentation(**settings)),
             "batched": (batched, SimCLRAugmentation(device="batch", **settings))}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for name, (run, augmentation) in sides.items():  # warm-up
        run(augmentation, images[:32], seeds[:32])
    for _ in range(args.repeats):
        for name, (run, augmentation) in sides.items():
            started = time.perf_counter()
            run(augmentation, images, seeds)
            rates[name].append(len(images) / (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(json.dumps({
        "settings": {**settings, "batch": args.batch, "n_views": 2, "threads": args.threads, "repeats": args.repeats},
        "items_per_s": {name: round(value, 1) for name, value in medians.items()},
        "all_items_per_s": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "batched_over_per_item": round(medians["batched"] / medians["per_item"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
