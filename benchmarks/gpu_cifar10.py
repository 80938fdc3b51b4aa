"""SimCLR, MoCo and BYOL (and with ``--methods``, DINO, SwAV, MoCo v3, MAE) on all of CIFAR-10 with the
data and the augmentation on the GPU.

Each method's published recipe (``recipes/<method>-cifar10.yaml``: full-width ResNet-18 with the
CIFAR stem, the method's heads and optimizer) is trained through the engine with the GPU fast
path: the 50,000 training JPEGs decoded once and kept as uint8 on the device
(``data.on_device: true``), views made there per batch (``augmentation.device: batch``), batch
512 (learning rate scaled linearly from the recipe's batch), bf16 autocast, channels-last and
``torch.compile``. At the end, weighted kNN top-1 (k = 200, temperature 0.1) over the 10,000 test
images with the training images as the memory. Prints one JSON document: per method, samples/s
and seconds per epoch (median over epochs after the first, which includes compilation; the first
epoch separately), kNN top-1 and the wall time. Progress goes to stderr.

    python benchmarks/gpu_cifar10.py --epochs 200                          # the goal: <= 15 min/method
    python benchmarks/gpu_cifar10.py --methods simclr --epochs 5 trainer.compile=false   # any override
    python benchmarks/gpu_cifar10.py --epochs 1 --limit 2048 --device cpu  # CPU smoke test

On ``--device cpu`` (a smoke test) compilation is off and precision is fp32. The data path is
relative to the repository root: ``../shared/data/cifar10/cifar10_jpeg.npz``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from toolkit import hookimpl
from toolkit.engine import Trainer
from toolkit.plugins import default_plugins
from toolkit.recipe import load_and_resolve

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_jpeg.npz"
BATCH_SIZE = 512


class EpochClock:
    """Records the wall time at the end of every epoch (the step's loss is on the host by then, so
    the GPU has finished the step)."""

    def __init__(self) -> None:
        self.epoch_ends: dict[int, float] = {}
        self.started = time.perf_counter()

    @hookimpl
    def on_step_end(self, run, step, metrics):
        self.epoch_ends[run.epoch] = time.perf_counter()  # the last step of an epoch writes its end

    def epoch_seconds(self) -> list[float]:
        ends = [self.epoch_ends[epoch] for epoch in sorted(self.epoch_ends)]
        starts = [self.started, *ends[:-1]]
        return [end - start for start, end in zip(starts, ends)]


def overrides(method: str, args: argparse.Namespace) -> list[str]:
    """The recipe overrides of the fast path at this budget."""
    plugins = default_plugins()
    recipe = load_and_resolve(ROOT / "recipes" / f"{method}-cifar10.yaml", [], plugins)
    lr = recipe.block("optimizer")["lr"] * BATCH_SIZE / recipe.block("trainer")["batch_size"]
    schedule = recipe.block("schedule")
    warmup = schedule["warmup_epochs"] * args.epochs / schedule["epochs"]
    on_gpu = args.device != "cpu"
    limit = f"{args.limit}" if args.limit else "null"
    return [
        f"data.path={DATA}",
        f"data.limit={limit}",
        "data.on_device=true",
        "augmentation.device=batch",
        f"trainer.device={args.device}",
        f"trainer.batch_size={BATCH_SIZE}",
        f"optimizer.lr={lr:.6g}",
        f"schedule.epochs={args.epochs}",
        f"schedule.warmup_epochs={warmup:.6g}",
        f"trainer.precision={'bf16' if on_gpu else 'fp32'}",
        "trainer.channels_last=true",
        f"trainer.compile={'true' if on_gpu else 'false'}",
        "trainer.num_workers=0",
        f"trainer.log_every={args.log_every}",
        f"trainer.checkpoint_every={10**9}",
        "eval.at_start=false",
        "eval.every_epochs=0",
        "eval.evaluators=[{name: knn, k: 200, temperature: 0.1}]",
        f"eval.train_data={{split: train, limit: {limit}}}",
        f"eval.test_data={{split: test, limit: {f'{args.limit}' if args.limit else 'null'}}}",
        *args.overrides,
    ]


def run(method: str, args: argparse.Namespace) -> dict[str, object]:
    plugins = default_plugins()
    recipe = load_and_resolve(ROOT / "recipes" / f"{method}-cifar10.yaml", overrides(method, args), plugins)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        trainer = Trainer.from_recipe(recipe, plugins, Path(run_dir) / method)
        plugins.manager.register(clock)
        clock.started = time.perf_counter()
        try:
            final = trainer.fit()
        finally:
            plugins.manager.unregister(clock)
            trainer.close()
        wall = time.perf_counter() - started
    epochs = clock.epoch_seconds()
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    samples_per_epoch = trainer.plan.steps_per_epoch * trainer.plan.batch_size
    return {
        "samples_per_s": round(samples_per_epoch / steady, 1),
        "seconds_per_epoch": round(steady, 2),
        "first_epoch_seconds": round(epochs[0], 2),
        "epochs": len(epochs),
        "knn_top1": round(final["knn_top1"], 4),
        "wall_seconds": round(wall, 1),
        "train_items": len(trainer.source),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco", "byol"],
                        choices=["simclr", "moco", "byol", "dino", "swav", "mocov3", "mae"])
    parser.add_argument("--limit", type=int, default=None, help="train and test on the first N images of each split")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: this benchmark needs the CIFAR-10 JPEG pack beside the checkout")
    results = {method: run(method, args) for method in args.methods}
    print(json.dumps({"epochs": args.epochs, "limit": args.limit, "device": args.device, "batch_size": BATCH_SIZE,
                      "methods": results}, indent=2))


if __name__ == "__main__":
    main()
