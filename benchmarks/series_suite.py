"""Sequence plugin: the series recipes on every UCR/UEA classification set at hand, against the raw series.

Runs ``sequence_probe.probe`` (same probes, same features, same seed) for every recipe on every
dataset: the four sets in ``../shared/data/ucr_uea`` (``.npz``) and the classification sets the
``aeon`` wheel ships (``.ts``; ``pip download aeon==1.6.0 --no-deps`` gives it: a package registry
is the only network this needs). A recipe is adapted to each set by overrides only: the data
source and path, ``encoder.in_channels``, ``augmentation.window`` (the longest training series,
at most ``--max-window``), for CPC ``objective.prediction_steps`` (at most a quarter of the
window), with ``--depth-from-window`` for TS2Vec ``encoder.depth`` (the smallest whose receptive
field lets every step see the whole window, :func:`depth_for_window`), and ``--steps`` optimizer
steps.

    python benchmarks/series_suite.py --recipe recipes/ts2vec-ucr-gunpoint.yaml \\
        --recipe recipes/cpc-ucr-gunpoint.yaml --aeon-wheel /tmp/aeon/aeon-1.6.0-py3-none-any.whl

Prints one JSON object: per dataset and recipe the probes' accuracies (``sequence_probe``'s
``probes``), the training wall time and the sizes; and a ``summary`` table of linear / kNN top-1
for the trained encoder, its random init and the raw series.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequence_probe import probe  # noqa: E402
from toolkit.recipe import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ucr_uea"
AEON_SETS = ("ArrowHead", "JapaneseVowels", "OSULeaf", "PickupGestureWiimoteZ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, action="append", required=True)
    parser.add_argument("--aeon-wheel", type=Path, help="aeon's wheel, for its bundled .ts datasets")
    parser.add_argument("--datasets", nargs="*", help="only these (default: every set found)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--max-window", type=int, default=512)
    parser.add_argument("--depth-from-window", action="store_true",
                        help="TS2Vec: the smallest encoder.depth whose receptive field covers the window both ways")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as unpacked:
        sets = _datasets(args.aeon_wheel, Path(unpacked))
        if args.datasets:
            sets = {name: spec for name, spec in sets.items() if name in args.datasets}
        results: dict[str, Any] = {}
        for name, (source, path, channels, length) in sets.items():
            window = min(length, args.max_window)
            for recipe in args.recipe:
                overrides = [f"data.name={source}", f"data.path={path}", "data.limit=null",
                             f"encoder.in_channels={channels}", f"augmentation.window={window}",
                             f"schedule.epochs={10 ** 6}", f"schedule.max_steps={args.steps}", *args.overrides]
                objective = load(recipe).values["objective"]["name"]
                if objective == "cpc":
                    overrides.append(f"objective.prediction_steps={max(1, min(8, window // 4))}")
                if objective == "ts2vec" and args.depth_from_window:
                    overrides.append(f"encoder.depth={depth_for_window(window)}")
                print(f"{name} / {recipe.name}", file=sys.stderr, flush=True)
                results.setdefault(name, {})[recipe.stem] = probe(recipe, overrides, ["class"])
    summary = {name: {recipe: _row(run["probes"]["class"]) for recipe, run in runs.items()}
               for name, runs in results.items()}
    print(json.dumps({"steps": args.steps, "depth_from_window": args.depth_from_window, "summary": summary,
                      "runs": results}, indent=2))


def depth_for_window(window: int, kernel_size: int = 3) -> int:
    """The smallest TS2Vec depth ``d`` whose receptive field ``R = 1 + 2 (k - 1) (2^(d + 1) - 1)``
    is at least ``2 window - 1``: with "same" padding step ``t`` then sees ``t - window + 1 ..
    t + window - 1``, every step of the window, and no block only convolves padding."""
    depth = 0
    while 1 + 2 * (kernel_size - 1) * (2 ** (depth + 1) - 1) < 2 * window - 1:
        depth += 1
    return depth


def _row(probes: dict[str, dict[str, float]]) -> dict[str, str]:
    return {feature: f"{probes[feature]['linear']:.3f} / {probes[feature]['knn']:.3f}"
            for feature in ("encoder", "encoder_random_init", "raw")}


def _datasets(wheel: Path | None, into: Path) -> dict[str, tuple[str, Path, int, int]]:
    """name -> (data source, path, channels, longest training series)."""
    found: dict[str, tuple[str, Path, int, int]] = {}
    for path in sorted(SHARED.glob("*.npz")):
        with np.load(path) as archive:
            x = archive["x_train"]
        found[path.stem] = ("ucr-npz", path, x.shape[1], _longest(x))
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            for name in AEON_SETS:
                for split in ("TRAIN", "TEST"):
                    member = f"aeon/datasets/data/{name}/{name}_{split}.ts"
                    (into / name).mkdir(exist_ok=True)
                    (into / name / f"{name}_{split}.ts").write_bytes(archive.read(member))
                from selfsup_sequence.tsfile import read_ts

                x = read_ts(into / name / f"{name}_TRAIN.ts")[0]
                found[name] = ("ucr-ts", into / name, x.shape[1], _longest(x))
    return found


def _longest(x: np.ndarray) -> int:
    present = ~np.isnan(x).all(axis=1)
    return int(max(np.flatnonzero(row).max() + 1 for row in present))


if __name__ == "__main__":
    main()
