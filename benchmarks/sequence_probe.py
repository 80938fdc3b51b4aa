"""Sequence plugin: kNN and linear-probe accuracy of frozen features against hand-made baselines.

One run of a sequence recipe (CPC, TS2Vec) through the engine, then, for every requested
label, the same two probes on every feature set:

- **linear**: ``toolkit.evaluation.fit_linear_probe`` (standardised features, L2-regularised
  logistic regression, weight decay 1e-4, full-batch L-BFGS, 200 iterations);
- **kNN**: cosine k-nearest neighbours, k = 20, votes weighted by ``exp(cos / 0.07)``
  (``toolkit.evaluation.knn_scores``, the engine's kNN evaluator).

Feature sets:

- ``encoder``: what the trained encoder returns (its configured pooling: what ``selfsup eval``
  and an export give a user), and ``encoder_random_init``: the same encoder before training;
- for encoders with ``encode`` / ``context`` (CPC), the ablation of the pooled feature:
  ``c_mean``, ``c_last``, ``z_mean``, ``c_meanstd``, ``z_meanstd`` and ``zc_meanstd`` (mean and
  standard deviation over an item's valid frames of the local features ``z``, the context
  ``c`` or both), trained and at random init;
- the baseline: for audio encoders (those with a ``sample_rate``) MFCCs (torchaudio, 20
  coefficients, 25 ms windows, 10 ms hop, 40 mels; mean and std over time: 40 features); for
  time series the raw values, NaN read as 0, padded to the longest training series, flattened.

Every feature set is computed from the same items (the augmentation's evaluation transform
of the recipe's ``eval.train_data`` / ``eval.test_data``), so the probes differ only in the
features. Conditions are recipe overrides, for instance the held-out speakers of FSDD::

    python benchmarks/sequence_probe.py recipes/cpc-fsdd.yaml --labels digit speaker
    python benchmarks/sequence_probe.py recipes/cpc-fsdd-unseen-speakers.yaml --labels digit
    python benchmarks/sequence_probe.py recipes/ts2vec-ucr-gunpoint.yaml --set trainer.seed=1
    python benchmarks/sequence_probe.py recipes/ts2vec-ucr-gunpoint.yaml \\
        --set data.path=/tmp/ucr/JapaneseVowels encoder.in_channels=12 data.name=ucr-ts

Prints JSON: steps, training wall time, training sequences/s (median of the logged windows after
the first), the final objective metrics, and ``probes[label][feature] = {"linear", "knn"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from toolkit.engine import Trainer
from toolkit.evaluation import fit_linear_probe, knn_scores
from toolkit.interfaces import DataSource
from toolkit.plugins import default_plugins
from toolkit.recipe import build, load_and_resolve

WEIGHT_DECAY, MAX_ITER = 1e-4, 200
KNN_K, KNN_TEMPERATURE = 20, 0.07
BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--labels", nargs="+", default=["class"], help="data-source labels to probe")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="recipe overrides key=value")
    parser.add_argument("--skip-training", action="store_true", help="probe the random-init encoder only")
    args = parser.parse_args()
    print(json.dumps(probe(args.recipe, args.overrides, args.labels, args.skip_training), indent=2))


def probe(recipe_path: Path, overrides: list[str], labels: list[str], skip_training: bool = False) -> dict[str, Any]:
    """Train ``recipe_path`` (with ``overrides``) and probe every feature set on every label."""
    plugins = default_plugins()
    recipe = load_and_resolve(recipe_path, ["eval.evaluators=[]", *overrides], plugins)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer.from_recipe(recipe, plugins, Path(out) / "run", log=open(os.devnull, "w"))
        sources = {label: {role: _source(trainer, role, label) for role in ("train", "test")} for label in labels}
        items = {role: _items(trainer, source) for role, source in sources[labels[0]].items()}
        features = {f"{name}_random_init": value for name, value in _features(trainer.encoder, items).items()}
        wall, records = 0.0, []
        if not skip_training:
            started = time.perf_counter()
            trainer.fit()
            wall = time.perf_counter() - started
            records = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
            features.update(_features(trainer.encoder, items))
    audio = "sample_rate" in trainer.encoder.input_spec
    baseline = "mfcc" if audio else "raw"
    features[baseline] = (_mfcc(int(trainer.encoder.input_spec["sample_rate"])) if audio else _raw)(items)
    probes = {label: {name: _probe(value, {role: s.labels for role, s in split.items()})
                      for name, value in features.items()} for label, split in sources.items()}
    train = [r for r in records if r["kind"] == "train" and "samples_per_s" in r]
    speeds = [r["samples_per_s"] for r in train[1:]] or [r["samples_per_s"] for r in train] or [float("nan")]
    final = {k: round(v, 4) for k, v in (train[-1] if train else {}).items()
             if isinstance(v, float) and k not in ("lr", "samples_per_s", "step_s", "data_s")}
    return {
        "recipe": recipe.name,
        "overrides": list(overrides),
        "steps": 0 if skip_training else trainer.total_steps,
        "train_wall_s": round(wall, 1),
        "train_sequences_per_s_median": round(statistics.median(speeds), 1),
        "final_metrics": final,
        "items": {role: len(xs) for role, xs in items.items()},
        "probes": probes,
    }


def _source(trainer: Trainer, role: str, label: str) -> DataSource:
    block = {**trainer.recipe.block("data"), **getattr(trainer.eval_config, f"{role}_data")}
    if label != "class":
        block["label"] = label
    return build(trainer.plugins, "datasource", block, input_spec=trainer.encoder.input_spec)


def _items(trainer: Trainer, source: DataSource) -> list[Tensor]:
    return [trainer.augmentation.eval_transform(source[i]) for i in range(len(source))]


@torch.no_grad()
def _features(encoder: torch.nn.Module, items: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    """Every feature set of ``encoder`` for the items of each role: name -> ``{role: (N, D)}``."""
    was_training = encoder.training
    encoder.eval()
    out: dict[str, dict[str, Tensor]] = {}
    for role, xs in items.items():
        for name, value in _batched(encoder, xs).items():
            out.setdefault(name, {})[role] = value
    encoder.train(was_training)
    return out


def _batched(encoder: Any, xs: list[Tensor]) -> dict[str, Tensor]:
    """Features of items ``xs`` (each ``(C, L)``), batched in order of length so padding stays small."""
    order = sorted(range(len(xs)), key=lambda i: xs[i].shape[-1])
    collate = encoder.collate()
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, len(order), BATCH):
        chosen = [xs[i] for i in order[start:start + BATCH]]
        x = collate(chosen)
        parts.setdefault("encoder", []).append(encoder(x).float())
        if callable(getattr(encoder, "context", None)):
            for name, value in _cpc_poolings(encoder, x, [c.shape[-1] for c in chosen]).items():
                parts.setdefault(name, []).append(value)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {name: torch.cat(values)[inverse] for name, values in parts.items()}


def _cpc_poolings(encoder: Any, x: Tensor, lengths: list[int]) -> dict[str, Tensor]:
    """The pooled-feature ablation of a CPC encoder: mean / last / mean+std of ``z`` and ``c``."""
    z = encoder.encode(x)
    c = encoder.context(z)
    frames = encoder.valid_frames(torch.tensor(lengths)).clamp(1, z.shape[1])
    valid = (torch.arange(z.shape[1])[None, :] < frames[:, None]).float()[..., None]

    def mean_std(sequence: Tensor) -> tuple[Tensor, Tensor]:
        mean = (sequence * valid).sum(1) / frames[:, None]
        var = ((sequence - mean[:, None]).square() * valid).sum(1) / frames[:, None]
        return mean, var.sqrt()

    z_mean, z_std = mean_std(z.float())
    c_mean, c_std = mean_std(c.float())
    return {"c_mean": c_mean, "c_last": c[torch.arange(len(c)), frames - 1].float(), "z_mean": z_mean,
            "c_meanstd": torch.cat([c_mean, c_std], 1), "z_meanstd": torch.cat([z_mean, z_std], 1),
            "zc_meanstd": torch.cat([z_mean, z_std, c_mean, c_std], 1)}


def _mfcc(rate: int) -> Callable[[dict[str, list[Tensor]]], dict[str, Tensor]]:
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(rate, n_mfcc=20, melkwargs={
        "n_fft": int(0.025 * rate), "hop_length": int(0.010 * rate), "n_mels": 40})

    def features(items: dict[str, list[Tensor]]) -> dict[str, Tensor]:
        out = {}
        for role, xs in items.items():
            coefficients = [mfcc(x.mean(dim=0)) for x in xs]
            out[role] = torch.stack([torch.cat([m.mean(dim=1), m.std(dim=1)]) for m in coefficients])
        return out

    return features


def _raw(items: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    length = max(x.shape[-1] for x in items["train"])
    return {role: torch.stack([torch.nn.functional.pad(torch.nan_to_num(x), (0, max(length - x.shape[-1], 0)))
                               [:, :length].flatten() for x in xs]) for role, xs in items.items()}


def _probe(features: dict[str, Tensor], labels: dict[str, Tensor]) -> dict[str, float]:
    torch.manual_seed(0)
    classifier = fit_linear_probe(features["train"], labels["train"], WEIGHT_DECAY, MAX_ITER)
    with torch.no_grad():
        linear = (classifier(features["test"]).argmax(dim=1) == labels["test"]).float().mean().item()
    votes = knn_scores(features["train"], labels["train"], features["test"], KNN_K, KNN_TEMPERATURE)
    knn = (votes.argmax(dim=1) == labels["test"]).float().mean().item()
    return {"linear": round(linear, 4), "knn": round(knn, 4)}


if __name__ == "__main__":
    main()
