"""Representation quality on CIFAR-10 per method: kNN and linear probe, random init vs trained.

Each method's CIFAR-10 recipe (``recipes/<method>-cifar10.yaml``, the published settings) is
trained through the engine for a fixed short budget, set by overrides: a narrow ResNet-18
(``--width``) or, for the recipes on the ``timm`` encoder, a narrow and shallow ViT (``--vit-dim``,
``--vit-depth``, ``--vit-heads``; MAE's decoder shrinks with it), ``--epochs`` over a fixed class-balanced subset of ``--train-limit`` training
images, batch ``--batch-size`` with the recipe's learning rate scaled linearly to it, and a
short linear warmup. The encoder is evaluated before training (random init, ``eval.at_start``)
and after it: weighted cosine kNN (k = 200, temperature 0.1) with the training subset as the
memory, and a linear probe (L-BFGS logistic regression on frozen features), both on a fixed
random subset of ``--test-limit`` images of the CIFAR-10 test set (``data.limit``'s subset).
Prints one JSON document; progress goes to stderr.

    python benchmarks/quality_cifar10.py                       # every method
    python benchmarks/quality_cifar10.py --method moco --method byol --epochs 5
    python benchmarks/quality_cifar10.py --method simclr trainer.num_workers=2   # any recipe override
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from toolkit.engine import Trainer
from toolkit.plugins import default_plugins
from toolkit.recipe import load_and_resolve

ROOT = Path(__file__).resolve().parent.parent
METHODS = {name: ROOT / "recipes" / f"{name}-cifar10.yaml"
           for name in ("simclr", "moco", "byol", "simsiam", "supcon", "instdisc", "dino", "swav", "mocov3", "mae",
                        "dino-vit")}
EVALUATORS = "[{name: knn, k: 200, temperature: 0.1}, {name: linear-probe}]"


def budget_overrides(recipe_path: Path, args: argparse.Namespace) -> list[str]:
    """The overrides that shrink ``recipe_path`` to the benchmark's budget."""
    plugins = default_plugins()
    recipe = load_and_resolve(recipe_path, [], plugins)
    lr = recipe.block("optimizer")["lr"] * args.batch_size / recipe.block("trainer")["batch_size"]
    if recipe.block("encoder")["name"] == "timm":  # a narrow, shallow ViT instead of a narrow ResNet
        vit = {"embed_dim": args.vit_dim, "depth": args.vit_depth, "num_heads": args.vit_heads}
        encoder = [f"encoder.options.{key}={value}" for key, value in vit.items()]
        if recipe.block("objective")["name"] == "mae":  # MAE's decoder shrinks with the encoder
            encoder += [f"objective.decoder_dim={args.vit_dim}", "objective.decoder_depth=1",
                        f"objective.decoder_heads={args.vit_heads}"]
    else:
        encoder = [f"encoder.width={args.width}"]
    return [
        *encoder,
        f"data.limit={args.train_limit}",
        f"trainer.batch_size={args.batch_size}",
        f"optimizer.lr={lr:.6g}",
        f"schedule.epochs={args.epochs}",
        f"schedule.warmup_steps={args.warmup_steps}",
        "trainer.num_workers=0",
        f"trainer.log_every={10**9}",
        f"trainer.checkpoint_every={10**9}",
        "eval.at_start=true",
        "eval.every_epochs=0",
        f"eval.evaluators={EVALUATORS}",
        f"eval.train_data={{limit: {args.train_limit}}}",
        f"eval.test_data={{limit: {args.test_limit}}}",
    ]


def run_method(name: str, args: argparse.Namespace) -> dict:
    plugins = default_plugins()
    overrides = [*budget_overrides(METHODS[name], args), *args.overrides]
    recipe = load_and_resolve(METHODS[name], overrides, plugins)
    log = sys.stderr if args.verbose else open(os.devnull, "w")
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        trainer = Trainer.from_recipe(recipe, plugins, Path(run_dir) / name, log=log)
        trained = trainer.fit()
        wall = time.perf_counter() - started
    return {
        "recipe": str(METHODS[name].relative_to(ROOT)),
        "steps": trainer.step,
        "wall_s": round(wall, 1),
        "random_init": _rounded(trainer.start_eval),
        "trained": _rounded(trained),
        "overrides": overrides,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", action="append", choices=sorted(METHODS),
                        help="a method to run (repeatable); default: all")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 first-stage channels (64 in the papers)")
    parser.add_argument("--vit-dim", type=int, default=64, help="ViT width for the timm recipes (384 in ViT-S)")
    parser.add_argument("--vit-depth", type=int, default=4, help="ViT blocks for the timm recipes (12 in ViT-S)")
    parser.add_argument("--vit-heads", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--verbose", action="store_true", help="show the engine's progress on stderr")
    parser.add_argument("overrides", nargs="*", help="further recipe overrides, key.path=value")
    args = parser.parse_args()
    results = {}
    for name in args.method or list(METHODS):
        results[name] = run_method(name, args)
        print(f"{name}: {json.dumps(results[name]['trained'])} in {results[name]['wall_s']} s", file=sys.stderr,
              flush=True)
    print(json.dumps({
        "benchmark": "quality_cifar10",
        "data": "shared/data/cifar10/cifar10_jpeg.npz",
        "budget": {"width": args.width, "vit": [args.vit_dim, args.vit_depth, args.vit_heads], "epochs": args.epochs, "train_images": args.train_limit,
                   "test_images": args.test_limit, "batch_size": args.batch_size},
        "torch_threads": torch.get_num_threads(),
        "methods": results,
    }, indent=2))


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in metrics.items()}


if __name__ == "__main__":
    main()
