"""The ``hf-dataset`` data source: rows of a Hugging Face dataset on local disk, any modality."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from selfsup_shards.decoding import Decoding, decode_value
from selfsup_shards.sharded import UNREADABLE, OnError, ShardedSource, label_classes
from selfsup_shards.tars import expand
from toolkit.errors import DataError
from toolkit.extras import require
from toolkit.tables import open_table, split_of


class HFDataset(ShardedSource):
    """Rows of a local Hugging Face dataset, with ``item`` (a column, or a list of columns for
    tuple items) and ``label`` (an integer or ``ClassLabel`` column; ``null``: unlabelled).

    ``path``: a ``save_to_disk`` folder (a ``DatasetDict`` gives its splits), an ``.arrow`` or
    ``.parquet`` file, a pattern of them (``train-*.parquet``) or a folder of them in the Hub's
    layout (``<split>-*.parquet``, ``<split>/``). Data without the split asked for (one file, a
    ``Dataset``) is one list: ``train`` and ``test`` are a seeded held-out split
    (``eval.holdout_fraction``), ``all`` is every row.

    Cells are decoded by content: ``Image`` and ``Audio`` columns (read undecoded) with
    torchvision and soundfile, as the ``webdataset`` source decodes them (audio resampled to the
    encoder's sample rate), strings as text, numeric lists and arrays as float32 series ``(C, L)``.

    ``streaming: false``: the rows are memory-mapped Arrow (parquet is converted once into the
    ``datasets`` cache) and every epoch is one uniform shuffle. ``streaming: true`` (parquet
    only) reads the files in place, a row group at a time, with no cache copy: row groups are the
    shards of a shard-block order (seeded, shuffled within windows of ``shuffle_buffer`` rows).
    A row that cannot be decoded stops the run, or with ``on_error: skip`` is replaced, reported
    and counted (``data_errors``). ``limit`` keeps a fixed random subset.
    """

    def __init__(self, path: Path, item: str | list[str], split: str = "train", label: str | None = None,
                 streaming: bool = False, on_error: OnError = "raise", shuffle_buffer: int = 10_000,
                 limit: int | None = None, holdout_fraction: float = 0.1,
                 input_spec: dict[str, Any] | None = None) -> None:
        self.columns = [item] if isinstance(item, str) else list(item)
        if not self.columns:
            raise ValueError("data.item: name the column (or columns) that hold the items")
        self.tuples, self.label_column, self.streaming = not isinstance(item, str), label, streaming
        self.decoding = Decoding(sample_rate=(input_spec or {}).get("sample_rate"))
        self.sample_rate = self.decoding.sample_rate
        path = Path(path)
        if streaming:
            counts, labels, classes, one_list = self._row_groups(path, split)
            buffer: int | None = shuffle_buffer
        else:
            counts, labels, classes, one_list = self._memory_mapped(path, split)
            buffer = None
        self.select(counts, labels, split, one_list, limit, holdout_fraction, f"dataset {path}", buffer, on_error)
        # counted over every row, as webdataset does: a split or a limit must not lose a class
        self.num_classes, self.class_names = label_classes(labels, classes, None)
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._pid = os.getpid()

    def __getitem__(self, index: int) -> Any:
        shard, member = self.locate(index)
        if self.streaming:
            row = self._group(shard).slice(member, 1).to_pylist()[0]
            where = f"{self.files[self.groups[shard][0]]}: row group {self.groups[shard][1]}, row {member}"
        else:
            row = self.table[member]
            where = f"{self.where}: row {member}"
        try:
            values = [decode_value(row[column], self.decoding) for column in self.columns]
        except UNREADABLE as error:
            raise self.unreadable(where, error) from None
        return tuple(values) if self.tuples else values[0]

    def item_id(self, index: int) -> str:
        shard, member = self.locate(index)
        if self.streaming:
            file, group = self.groups[shard]
            return f"{self.files[file].name}:{group}:{member}"
        return f"row {member}"

    def _memory_mapped(self, path: Path, split: str) -> tuple[list[int], torch.Tensor | None, list[str] | None, bool]:
        datasets = require("datasets", f"reading {path}")
        table = open_table(path)
        one_list = True
        if isinstance(table, datasets.DatasetDict):
            if split in table:
                table, one_list = table[split], split in ("train", "test", "all") and "test" not in table
            elif split in ("train", "test", "all") and "train" in table and "test" not in table:
                table = table["train"]
            else:
                raise DataError(f"{path}: no split {split!r}; it has {', '.join(table)}")
        self._check_columns(list(table.column_names), path)
        for column in self.columns:
            feature = table.features[column]
            if isinstance(feature, (datasets.Image, datasets.Audio)):  # decoded here, by torchvision and soundfile
                table = table.cast_column(column, type(feature)(decode=False))
        labels, classes = None, None
        if self.label_column is not None:
            labels = _label_tensor(table[self.label_column], path, self.label_column)
            feature = table.features[self.label_column]
            classes = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        self.table = table.select_columns(self.columns)
        return [len(table)], labels, classes, one_list

    def _row_groups(self, path: Path, split: str) -> tuple[list[int], torch.Tensor | None, list[str] | None, bool]:
        parquet = require("pyarrow.parquet", f"reading {path}")
        files, one_list = _parquet_files(path, split)
        self.files, self.groups, counts, label_parts = files, [], [], []
        for number, file in enumerate(files):
            metadata = parquet.ParquetFile(file).metadata
            self._check_columns(list(parquet.read_schema(file).names), file)  # top-level columns, not leaves
            for group in range(metadata.num_row_groups):
                self.groups.append((number, group))
                counts.append(metadata.row_group(group).num_rows)
            if self.label_column is not None:
                column = parquet.read_table(file, columns=[self.label_column]).column(0).to_pylist()
                label_parts.append(_label_tensor(column, file, self.label_column))
        labels = torch.cat(label_parts) if label_parts else None
        return counts, labels, _class_names(files[0], self.label_column), one_list

    def _group(self, shard: int) -> Any:
        """Row group ``shard`` (its item columns), from this process's last few."""
        if self._pid != os.getpid():
            self._cache, self._pid = OrderedDict(), os.getpid()
        if shard not in self._cache:
            parquet = require("pyarrow.parquet", "reading parquet row groups")
            file, group = self.groups[shard]
            self._cache[shard] = parquet.ParquetFile(self.files[file]).read_row_group(group, columns=self.columns)
            if len(self._cache) > 8:
                self._cache.popitem(last=False)
        self._cache.move_to_end(shard)
        return self._cache[shard]

    def _check_columns(self, names: list[str], where: Path) -> None:
        wanted = self.columns + ([self.label_column] if self.label_column else [])
        missing = [column for column in wanted if column not in names]
        if missing:
            raise DataError(f"{where}: no column {', '.join(map(repr, missing))}; data.item and data.label must name "
                            f"some of {', '.join(names)}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict(), "_pid": -1}


def _parquet_files(path: Path, split: str) -> tuple[list[Path], bool]:
    """The parquet files of ``split`` and whether they are one list to split."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*.parquet") if not f.name.startswith("."))
        by_split: dict[str, list[Path]] = {}
        for file in files:
            relative = file.relative_to(path).parts
            by_split.setdefault(split_of("/".join(relative[1:] if relative[0] == "data" else relative)), []).append(
                file)
        if split in by_split and ("test" in by_split or split not in ("train", "test", "all")):
            return by_split[split], False
        if split in ("train", "test", "all") and "test" not in by_split and files:
            return files, True
        raise DataError(f"{path}: no parquet files of split {split!r} (splits there: {', '.join(by_split) or 'none'})")
    files = [Path(name) for name in expand(str(path))]
    missing = [f for f in files if f.suffix.lower() != ".parquet" or not f.is_file()]
    if not files or missing:
        raise DataError(f"data.path: {missing[0] if missing else path} is not a parquet file; streaming: true reads "
                        f".parquet files (a save_to_disk folder or .arrow file is memory-mapped: streaming: false)")
    return files, True


def _label_tensor(values: Any, where: Path, column: str) -> torch.Tensor:
    values = list(values)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise DataError(f"{where}: column {column!r} must hold class indices (integers from 0) to be data.label")
    return torch.tensor(values, dtype=torch.int64)


def _class_names(file: Path, column: str | None) -> list[str] | None:
    """A ``ClassLabel`` column's names, from the ``datasets`` features kept in the parquet schema."""
    if column is None:
        return None
    parquet = require("pyarrow.parquet", f"reading {file}")
    metadata = parquet.read_schema(file).metadata or {}
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError):
        return None
    feature = features.get(column, {})
    return list(feature["names"]) if feature.get("_type") == "ClassLabel" and "names" in feature else None
