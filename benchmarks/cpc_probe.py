"""CPC (sequences plugin): linear-probe accuracy of frozen CPC features against handcrafted baselines.

One short run of a CPC recipe through the engine, then, for every requested label, the same
linear probe (``toolkit.evaluation.fit_linear_probe``: standardised features, L-BFGS) on

- ``cpc_mean`` / ``cpc_last``: the trained encoder's context ``c_t``, mean over valid frames / last frame;
- ``cpc_random_init``: the same encoder before training (mean pooling);
- the baseline: for audio encoders (those with a ``sample_rate``) MFCCs (torchaudio, 20
  coefficients, 25 ms windows, 10 ms hop, 40 mels), mean and std over time (40 features); for
  time series the raw values, NaN read as 0 and padded to the longest training series, flattened.

Every method sees the same items through the augmentation's evaluation transform.

    python benchmarks/cpc_probe.py recipes/cpc-fsdd.yaml --labels digit speaker --set schedule.epochs=4

Prints JSON: steps, training wall time, training sequences/s (median of the logged windows after
the first), the final CPC accuracy, and the probe accuracies per label.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor

from toolkit.engine import Trainer
from toolkit.evaluation import FeatureContext, fit_linear_probe
from toolkit.interfaces import DataSource
from toolkit.plugins import default_plugins
from toolkit.recipe import build, load_and_resolve

WEIGHT_DECAY, MAX_ITER = 1e-4, 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--labels", nargs="+", default=["class"], help="data-source labels to probe")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="recipe overrides key=value")
    args = parser.parse_args()
    plugins = default_plugins()
    recipe = load_and_resolve(args.recipe, ["eval.evaluators=[]", *args.overrides], plugins)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer.from_recipe(recipe, plugins, Path(out) / "run", log=open("/dev/null", "w"))
        sources = {label: {role: _source(trainer, role, label) for role in ("train", "test")} for label in args.labels}
        items = sources[args.labels[0]]  # the labels differ, the items do not: embed once
        random_init = _embed(trainer, items)
        started = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and "samples_per_s" in r]
    speeds = [r["samples_per_s"] for r in train[1:]] or [r["samples_per_s"] for r in train]
    audio = "sample_rate" in trainer.encoder.input_spec
    trained_mean = _embed(trainer, items)
    trainer.encoder.pooling = "last"
    trained_last = _embed(trainer, items)
    trainer.encoder.pooling = "mean"
    baseline = (_mfcc if audio else _raw)(trainer, items)
    probes = {label: {"cpc_mean": _probe(trained_mean, s), "cpc_last": _probe(trained_last, s),
                      "cpc_random_init": _probe(random_init, s), ("mfcc" if audio else "raw"): _probe(baseline, s)}
              for label, s in sources.items()}
    print(json.dumps({
        "recipe": recipe.name,
        "overrides": args.overrides,
        "steps": trainer.total_steps,
        "train_wall_s": round(wall, 1),
        "train_sequences_per_s_median": round(statistics.median(speeds), 1),
        "final_cpc_acc": round(train[-1].get("cpc_acc", float("nan")), 4),
        "probe_top1": probes,
    }, indent=2))


def _source(trainer: Trainer, role: str, label: str) -> DataSource:
    block = {**trainer.recipe.block("data"), **getattr(trainer.eval_config, f"{role}_data"), "label": label}
    return build(trainer.plugins, "datasource", block, input_spec=trainer.encoder.input_spec)


def _embed(trainer: Trainer, sources: dict[str, DataSource]) -> dict[str, Tensor]:
    context = FeatureContext(trainer.encoder, trainer.augmentation, {r: (lambda s=s: s) for r, s in sources.items()},
                             trainer.device, trainer.eval_config.batch_size)
    return {role: context.features(role)[0] for role in sources}


def _mfcc(trainer: Trainer, sources: dict[str, DataSource]) -> dict[str, Tensor]:
    rate = int(trainer.encoder.input_spec["sample_rate"])
    mfcc = torchaudio.transforms.MFCC(rate, n_mfcc=20, melkwargs={
        "n_fft": int(0.025 * rate), "hop_length": int(0.010 * rate), "n_mels": 40})
    features = {}
    for role, source in sources.items():
        rows = []
        for i in range(len(source)):
            coefficients = mfcc(trainer.augmentation.eval_transform(source[i]).mean(dim=0))
            rows.append(torch.cat([coefficients.mean(dim=1), coefficients.std(dim=1)]))
        features[role] = torch.stack(rows)
    return features


def _raw(trainer: Trainer, sources: dict[str, DataSource]) -> dict[str, Tensor]:
    items = {role: [trainer.augmentation.eval_transform(s[i]) for i in range(len(s))] for role, s in sources.items()}
    length = max(x.shape[-1] for x in items["train"])
    return {role: torch.stack([torch.nn.functional.pad(x, (0, max(length - x.shape[-1], 0)))[:, :length].flatten()
                               for x in xs]) for role, xs in items.items()}


def _probe(features: dict[str, Tensor], sources: dict[str, Any]) -> float:
    classifier = fit_linear_probe(features["train"], sources["train"].labels, WEIGHT_DECAY, MAX_ITER)
    with torch.no_grad():
        predicted = classifier(features["test"]).argmax(dim=1)
    return round((predicted == sources["test"].labels).float().mean().item(), 4)


if __name__ == "__main__":
    main()
