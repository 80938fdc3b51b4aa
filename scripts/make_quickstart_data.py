"""Build data/cifar10_mini_jpeg.npz, the quickstart's bundled CIFAR-10 subset.

Takes a class-balanced random subset (seed 0) of the JPEG pack in ../shared/data/cifar10
(byte-exact JPEG copies, no re-encoding): 800 training and 100 test images per class.

    python scripts/make_quickstart_data.py ../shared/data/cifar10/cifar10_jpeg.npz data/cifar10_mini_jpeg.npz
"""

from __future__ import annotations

import sys

import numpy as np

PER_CLASS = {"train": 800, "test": 100}


def main(source: str, target: str) -> None:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    with np.load(source) as pack:
        out["class_names"] = pack["class_names"]
        for split, per_class in PER_CLASS.items():
            labels, offsets, data = pack[f"y_{split}"], pack[f"offsets_{split}"], pack[f"jpeg_{split}"]
            chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                             for c in range(len(out["class_names"]))]))
            blobs = [data[offsets[i]:offsets[i + 1]] for i in chosen]
            out[f"jpeg_{split}"] = np.concatenate(blobs)
            out[f"offsets_{split}"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
            out[f"y_{split}"] = labels[chosen]
            out[f"files_{split}"] = pack[f"files_{split}"][chosen]
    np.savez_compressed(target, **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
