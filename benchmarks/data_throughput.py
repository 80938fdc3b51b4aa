"""Items/s of the data path for each data source and modality: the original files (npz, text) vs the
same items packed as WebDataset shards (``webdataset``) and as a parquet table (``hf-dataset``,
memory-mapped and streaming), decoded only and decoded + augmented, with 1 and 2 loader workers.

Mode ``read`` is the reader alone: ``source[i]`` for every item in epoch order, in this process.
Modes ``decoded`` and ``augmented`` make the training batches of one epoch through the engine's own
data path (``ViewBatches`` and ``epoch_loader``: the epoch order, per-item seeds, micro-batches in
loader workers, views stacked as an encoder's collate does). Epochs repeat until ``--seconds``
have passed; each case is measured ``--repeats`` times and the medians of items/s are printed as
JSON (one line per case) and as a table. The sharded readers read in shard-block order with a
1,000-item shuffle window (``shuffle_buffer``).

    python benchmarks/data_throughput.py                          # every modality, 1 and 2 workers
    python benchmarks/data_throughput.py --modality image --workers 2 --mode read
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="selfsup-bench-hf-"))  # no ~/.cache copies

import torch  # noqa: E402  (after the cache variable, which datasets reads when imported)

from toolkit.data import BatchPlan, ViewBatches, epoch_loader  # noqa: E402
from toolkit.interfaces import Augmentation, DataSource  # noqa: E402
from toolkit.plugins import default_plugins  # noqa: E402
from toolkit.recipe import build  # noqa: E402
from toolkit.shards import encode_item, pack_source  # noqa: E402

MODALITIES: dict[str, dict[str, Any]] = {
    "image": {"data": {"name": "image-jpeg-npz", "path": SHARED / "cifar10" / "cifar10_jpeg.npz", "limit": 4096},
              "augmentation": {"name": "simclr", "size": 32, "scale": [0.2, 1.0], "blur_prob": 0.0},
              "input_spec": {}},
    "audio": {"data": {"name": "fsdd", "path": SHARED / "fsdd" / "fsdd.npz"},
              "augmentation": {"name": "cpc-audio", "window": 4096}, "input_spec": {"sample_rate": 8000}},
    "text": {"data": {"name": "text", "path": SHARED / "wiki1m_head" / "sentences.txt", "limit": 4096},
             "augmentation": {"name": "simcse"}, "input_spec": {}},
    "series": {"data": {"name": "ucr-npz", "path": SHARED / "ucr_uea" / "ItalyPowerDemand.npz", "split": "test"},
               "augmentation": {"name": "cpc-series", "window": 16}, "input_spec": {}},
}
"""Each modality's original source, its recipe augmentation and the encoder's input spec."""


class Decoded(Augmentation):
    """The item itself, as one view: what the data path costs before augmentation."""

    n_views = 1

    def __call__(self, item: Any) -> list[Any]:
        return [item]

    def eval_transform(self, item: Any) -> Any:
        return item


def collate(views: list[Any]) -> Any:
    """Views stacked into one tensor when they share a shape (as an encoder's collate does: one
    transfer from the worker per view), else the list (variable-length audio, strings)."""
    if all(isinstance(v, torch.Tensor) for v in views) and len({tuple(v.shape) for v in views}) == 1:
        return torch.stack(views)
    return list(views)


def parquet_table(source: DataSource, path: Path, rows_per_group: int = 1000) -> Path:
    """``source``'s items and labels as a parquet table: encoded bytes as the shards hold them
    (PNG, FLAC, .npy) or strings, in row groups of ``rows_per_group``."""
    import pyarrow
    import pyarrow.parquet

    rate = getattr(source, "sample_rate", None)
    items = [source[i] for i in range(len(source))]
    column = items if isinstance(items[0], str) else [encode_item(item, sample_rate=rate)[0][1] for item in items]
    table = {"item": column}
    if source.labels is not None:
        table["label"] = source.labels.tolist()
    pyarrow.parquet.write_table(pyarrow.table(table), path, row_group_size=rows_per_group)
    return path


def readers(modality: str, work: Path) -> dict[str, dict[str, Any]]:
    """The blocks of every reader of one modality's items, after packing them."""
    plugins, case = default_plugins(), MODALITIES[modality]
    original = build(plugins, "datasource", case["data"], input_spec={})
    shards = work / f"{modality}-shards"
    pack_source(original, shards, shard_size=1000)
    table = parquet_table(original, work / f"{modality}.parquet")
    label = "label" if original.labels is not None else None
    return {"original": case["data"],
            "webdataset": {"name": "webdataset", "path": shards, "split": "all", "shuffle_buffer": 1000},
            "hf-dataset": {"name": "hf-dataset", "path": table, "item": "item", "label": label, "split": "all"},
            "hf-dataset streaming": {"name": "hf-dataset", "path": table, "item": "item", "label": label,
                                     "split": "all", "streaming": True, "shuffle_buffer": 1000}}


def items_read_per_second(source: DataSource, plan: BatchPlan, seconds: float) -> float:
    """Items read (``source[i]``, decoded) per second in epoch order, in this process."""
    done, epoch, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        for index in plan.order(epoch, source).tolist():
            source[index]
        done, epoch = done + len(source), epoch + 1
    return done / (time.perf_counter() - started)


def items_per_second(batches: ViewBatches, workers: int, seconds: float) -> float:
    """Items of whole epochs made per second, epochs repeated until ``seconds`` have passed."""
    done, epoch, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        for batch in epoch_loader(batches, epoch, 0, workers, pin_memory=False):
            done += len(batch)
        epoch += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=list(MODALITIES), action="append")
    parser.add_argument("--workers", type=int, action="append", help="loader workers (default: 1 and 2)")
    parser.add_argument("--mode", choices=["read", "decoded", "augmented"], action="append",
                        help="what to measure (default: all three)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0, help="least time per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plugins, rows = default_plugins(), []
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-data-") as work:
        for modality in args.modality or list(MODALITIES):
            case = MODALITIES[modality]
            augmented = build(plugins, "augmentation", case["augmentation"])
            for reader, block in readers(modality, Path(work)).items():
                source = build(plugins, "datasource", block, input_spec=case["input_spec"])
                plan = BatchPlan(len(source), min(args.batch, len(source)), seed=0)
                for mode in args.mode or ["read", "decoded", "augmented"]:
                    batches = ViewBatches(source, augmented if mode == "augmented" else Decoded(), collate, plan)
                    for workers in [0] if mode == "read" else args.workers or [1, 2]:
                        rates = [items_read_per_second(source, plan, args.seconds) if mode == "read" else
                                 items_per_second(batches, workers, args.seconds) for _ in range(args.repeats)]
                        row = {"modality": modality, "reader": reader, "mode": mode, "workers": workers,
                               "items": len(source), "items_per_s": round(statistics.median(rates)),
                               "range": [round(min(rates)), round(max(rates))]}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    print("\n| modality | reader | mode | workers | items/s (range) |\n| --- | --- | --- | --- | --- |",
          file=sys.stderr)
    for row in rows:
        print(f"| {row['modality']} | {row['reader']} | {row['mode']} | {row['workers']} | {row['items_per_s']:,} "
              f"({row['range'][0]:,}-{row['range'][1]:,}) |", file=sys.stderr)


if __name__ == "__main__":
    main()
