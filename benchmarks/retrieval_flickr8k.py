"""Image-text retrieval on Flickr8k after a fixed CPU time budget: CLIP, SigLIP and LiT against
random initialisation and chance, with training throughput.

Each method is its recipe (``recipes/{clip,siglip,lit}-flickr8k.yaml``: ResNet-18 image tower from
scratch, all-MiniLM-L6-v2 text tower, fine-tuned or locked) trained through the engine for
``--seconds`` of wall-clock time: a throwaway run of ``--calibration-steps`` steps measures the
seconds per step (its last step, past the first-step overheads), and the measured run then gets
as many steps as fit the budget, with the warmup + cosine schedule sized to them (10% warmup).
LiT's locked text tower needs no backward pass, so it gets more steps in the same time.
Throughput is the batch size over the median step time (the first step left out).

Then image->text and text->image Recall@1/5/10 (all 5 captions per image) on the first
``--test-limit`` test images (1,000: the standard Flickr8k test set), for each trained encoder,
for the encoder at initialisation (the same for the three methods: same seed, same towers) and
for chance (``i2t``: ``1 - C(K - 5, k) / C(K, k)`` for ``K`` captions; ``t2i``: ``k / M``).

    python benchmarks/retrieval_flickr8k.py                          # 60 s per method
    python benchmarks/retrieval_flickr8k.py --seconds 600 --set trainer.batch_size=128

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from toolkit import hookimpl
from toolkit.engine import Trainer
from toolkit.plugins import Plugins, default_plugins
from toolkit.recipe import load_and_resolve

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("clip", "siglip", "lit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training wall-clock budget per method")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--test-limit", type=int, default=1000, help="test images (1000: the whole test split)")
    parser.add_argument("--calibration-steps", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=["trainer.batch_size=64"], dest="overrides",
                        help="recipe overrides key=value for every method (default: trainer.batch_size=64)")
    args = parser.parse_args()
    plugins = default_plugins()
    common = ["eval.evaluators=[{name: retrieval}]", "eval.at_start=false", "eval.select_best=null",
              "eval.every_epochs=0", f"eval.test_data={{limit: {args.test_limit}}}", "trainer.checkpoint_every=100000",
              *args.overrides]
    report: dict[str, Any] = {"budget_s": args.seconds, "overrides": args.overrides, "methods": {}}
    with tempfile.TemporaryDirectory() as out:
        for method in args.methods:
            recipe = ROOT / "recipes" / f"{method}-flickr8k.yaml"
            seconds_per_step = _seconds_per_step(recipe, common, plugins, Path(out) / f"{method}-calibration",
                                                 args.calibration_steps)
            steps = max(1, int(args.seconds / seconds_per_step))
            trainer = _trainer(recipe, [*common, f"schedule.max_steps={steps}",
                                        f"schedule.warmup_steps={max(1, steps // 10)}"], plugins, Path(out) / method)
            if "random_init" not in report:  # the same towers and seed for every method
                report["random_init"] = _rounded(trainer.evaluate("random_init"))
                source = trainer.recipe.build("eval.test_data", input_spec=trainer.encoder.input_spec)
                captions = sum(len(source[i]["text"]) for i in range(len(source)))
                report["test"] = {"images": len(source), "captions": captions}
                report["chance"] = _chance(len(source), captions)
            clock = StepClock()
            metrics = _fit(trainer, clock, plugins)
            records = [json.loads(line) for line in (Path(out) / method / "metrics.jsonl").read_text().splitlines()]
            batch = trainer.plan.batch_size
            report["methods"][method] = {
                "steps": steps, "batch_size": batch, "seconds_per_step_calibrated": round(seconds_per_step, 2),
                "train_s": round(clock.total(), 1), "train_samples_per_s": round(batch / clock.median_step(), 1),
                "final_train_loss": round([r for r in records if r["kind"] == "train"][-1]["loss"], 4),
                "retrieval": _rounded(metrics)}
    print(json.dumps(report, indent=2))


def _trainer(recipe: Path, overrides: list[str], plugins: Plugins, run_dir: Path) -> Trainer:
    return Trainer.from_recipe(load_and_resolve(recipe, overrides, plugins), plugins, run_dir,
                               log=open("/dev/null", "w"))


class StepClock:
    """When training started and when each optimizer step ended (lifecycle hooks)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @hookimpl
    def on_train_start(self, run: Any) -> None:
        self.times = [time.perf_counter()]

    @hookimpl
    def on_step_end(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self.times.append(time.perf_counter())

    def total(self) -> float:
        return self.times[-1] - self.times[0]

    def median_step(self) -> float:
        """The median step duration, the first step (loader start, first-call overheads) left out."""
        durations = [b - a for a, b in zip(self.times, self.times[1:])]
        return statistics.median(durations[1:] or durations)


def _fit(trainer: Trainer, clock: StepClock, plugins: Plugins) -> dict[str, float]:
    plugins.manager.register(clock)
    try:
        return trainer.fit()
    finally:
        plugins.manager.unregister(clock)


def _seconds_per_step(recipe: Path, common: list[str], plugins: Plugins, run_dir: Path, steps: int) -> float:
    """Wall-clock seconds of the last of ``steps`` training steps (the first ones pay one-off costs)."""
    trainer = _trainer(recipe, [*common, f"schedule.max_steps={steps}", "eval.evaluators=[]"], plugins, run_dir)
    clock = StepClock()
    _fit(trainer, clock, plugins)
    return clock.times[-1] - clock.times[-2]


def _chance(images: int, captions: int) -> dict[str, float]:
    """Expected Recall@k of random rankings: an image query hits if any of its ``captions / images``
    captions is in the top ``k`` of all; a caption query if its image is in the top ``k``."""
    own = captions // images
    chance = {f"i2t_r{k}": 1 - math.comb(captions - own, k) / math.comb(captions, k) for k in (1, 5, 10)}
    chance.update({f"t2i_r{k}": k / images for k in (1, 5, 10)})
    chance["rsum"] = sum(chance.values())
    return _rounded(chance)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in metrics.items()}


if __name__ == "__main__":
    main()
