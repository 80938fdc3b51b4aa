"""Time series from the commonest files (CSV/TSV, ``.npy``, parquet) and the code every series
source shares: one list of series ``(N, C, L)`` with optional labels, split and limited.

Items are float32 ``(C, L)``; trailing all-NaN columns are padding (series of different
lengths). Labels are int64 class indices, or ``None`` for unlabelled data.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit.data import holdout_split, subset_indices
from toolkit.interfaces import DataSource

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
MISSING = ("", "?", "nan", "NaN", "NA", "null")


class SeriesSet(DataSource):
    """Series ``(N, C, L)`` and labels ``(N,)`` (or none), already split and limited.

    :func:`series_split` makes one; the ``series``, ``ucr-npz`` and ``ucr-ts`` sources are all
    built this way, so they split, limit and label alike.
    """

    def __init__(self, series: Tensor, labels: Tensor | None, class_names: list[str] | None,
                 split_note: str | None) -> None:
        self.series, self.labels, self.class_names, self.split_note = series, labels, class_names, split_note
        self.num_classes = len(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, index: int) -> Tensor:
        return self.series[index]


def series_split(x: np.ndarray, y: np.ndarray | None, split: str, one_list: bool, limit: int | None,
                 holdout_fraction: float, where: str, class_names: list[str] | None = None,
                 standardize: bool = False, train: np.ndarray | None = None) -> SeriesSet:
    """``x: (N, C, L)`` or ``(N, L)`` and integer labels ``y: (N,)`` (or ``None``) as the
    :class:`SeriesSet` of ``split``: a held-out part of them when they are ``one_list``
    (:func:`toolkit.data.holdout_split`), all of them otherwise; then ``limit`` items.

    ``standardize`` maps every channel to ``(x - mean_c) / std_c``, both over every value of
    the training series (``train``, the data's own training split, or, for ``one_list`` data,
    the training part of the held-out split), so that every split is scaled alike: TS2Vec's
    preprocessing of UEA data (Yue et al. 2022). It keeps the differences of level between
    series that per-item standardisation (the encoders' ``standardize``) erases."""
    x = _three_dims(x, where)
    labels = None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64))
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"{where}: {len(x)} series but {len(labels)} labels")
    chosen, note = torch.arange(len(x)), None
    if one_list:
        chosen, note = holdout_split(len(x), split, holdout_fraction, labels, where)
    if standardize:
        if train is None and not one_list:
            train = x
        elif train is None:
            rows = chosen if split == "train" else holdout_split(len(x), "train", holdout_fraction, labels, where)[0]
            train = x[rows.numpy()]
        x = standardize_with(x, _three_dims(train, where), where)
    chosen = chosen[subset_indices(len(chosen), limit)]
    if labels is not None and class_names is None:
        class_names = [str(c) for c in range(int(labels.max()) + 1)]
    return SeriesSet(torch.from_numpy(x[chosen.numpy()].astype(np.float32)),
                     labels[chosen] if labels is not None else None, class_names, note)


def standardize_with(x: np.ndarray, train: np.ndarray, where: str) -> np.ndarray:
    """``(x - mean_c) / std_c`` for ``x: (N, C, L)``, with every channel's mean and standard
    deviation over the present (non-NaN) values of ``train: (M, C, L')``; NaN stays NaN and a
    constant channel is only centred."""
    if train.shape[1] != x.shape[1]:
        raise ValueError(f"{where}: the training series have {train.shape[1]} channels, these {x.shape[1]}")
    present = ~np.isnan(train)
    if not present.any(axis=(0, 2)).all():
        raise ValueError(f"{where}: data.standardize: a channel has no value in the training series; drop that "
                         f"channel from the data or set data.standardize to false")
    mean = np.nanmean(train, axis=(0, 2), keepdims=True)
    std = np.nanstd(train, axis=(0, 2), keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _three_dims(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"{where}: series must be (N, C, L) or (N, L), got shape {x.shape}")
    return x


@declare(Contract(produces={"sequence"}))
def series_file(
    path: Path,
    split: str = "train",
    time: Literal["columns", "rows"] = "columns",
    label_column: str | None = None,
    id_column: str | None = None,
    channels: list[str] | None = None,
    segment_length: int | None = None,
    labels: Path | None = None,
    channels_last: bool = False,
    limit: int | None = None,
    holdout_fraction: float = 0.1,
    standardize: bool = False,
) -> SeriesSet:
    """The ``series`` data source: one file of time series, with or without labels.

    Tables (``.csv``/``.tsv`` with a header, ``.parquet``):

    - ``time: columns``: one series per row, each column a time step (``id,label,t0,t1,...``);
      ``label_column`` and ``id_column`` are not time steps.
    - ``time: rows``: one time step per row, the ``channels`` columns (default: every column but
      the label and id ones) are the channels. ``id_column`` groups rows into series (in order
      of first appearance; shorter ones are NaN-padded); without it the table is one recording
      cut into ``segment_length`` windows.

    ``.npy`` arrays: ``(N, L)`` or ``(N, C, L)`` series (``channels_last: true`` for
    ``(N, L, C)``); a 2-D array with ``time: rows`` is one recording ``(L, C)``, cut into
    ``segment_length`` windows. Labels come from ``labels``, an ``.npy`` of ``(N,)`` values.

    Labels of a table are the ``label_column`` values (classes in sorted order); a series'
    label must be constant over its rows, a window takes its most frequent one. A file is one
    list: ``train`` and ``test`` are a seeded held-out split (``eval.holdout_fraction``), ``all``
    every series (for a test file: ``eval.test_data: {path: test.csv, split: all}``).
    ``standardize: true`` scales every channel by the training part's mean and standard
    deviation (:func:`series_split`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} is not a file (relative paths are resolved from the recipe's "
                                f"folder)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x, values = _npy_series(path, time, labels, channels_last, segment_length)
    elif suffix in TABLE_SUFFIXES:
        x, values = _table_series(path, time, label_column, id_column, channels, segment_length)
    else:
        raise ValueError(f"{path}: the series source reads {', '.join(TABLE_SUFFIXES)} and .npy files; for UCR/UEA "
                         f"archives use ucr-npz (.npz) or ucr-ts (.ts)")
    y, class_names = (None, None) if values is None else encode_labels(values)
    return series_split(x, y, split, True, limit, holdout_fraction, f"series file {path}", class_names, standardize)


def encode_labels(values: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Class indices ``(N,)`` of arbitrary label values and the sorted class names (numeric
    labels sort as numbers)."""
    names = sorted({str(v) for v in values}, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(v)] for v in values], dtype=np.int64), names


def _npy_series(path: Path, time: str, labels: Path | None, channels_last: bool,
                segment_length: int | None) -> tuple[np.ndarray, list[Any] | None]:
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path}: not a numeric .npy array ({error})") from None
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got {x.dtype}")
    x = x.astype(np.float32)
    values = None if labels is None else np.load(Path(labels), allow_pickle=False).tolist()
    if x.ndim == 2 and time == "rows":
        return _segments(x.T, values, segment_length, path)
    if x.ndim == 3 and channels_last:
        x = x.transpose(0, 2, 1)
    if x.ndim not in (2, 3):
        raise ValueError(f"{path}: expected (N, L) or (N, C, L) series, got shape {x.shape}")
    return x, values


def _table_series(path: Path, time: str, label_column: str | None, id_column: str | None,
                  channels: list[str] | None, segment_length: int | None) -> tuple[np.ndarray, list[Any] | None]:
    table = _read_table(path)
    for key, column in (("label_column", label_column), ("id_column", id_column), *(
            ("channels", c) for c in channels or [])):
        if column is not None and column not in table:
            raise ValueError(f"{path}: data.{key}: no column {column!r}; the columns are {', '.join(table)}")
    values = table[label_column] if label_column else None
    data_columns = channels or [c for c in table if c not in (label_column, id_column)]
    numbers = {c: _numbers(table[c], c, path) for c in data_columns}
    if time == "columns":
        return np.stack([numbers[c] for c in data_columns], axis=1), values
    recording = np.stack([numbers[c] for c in data_columns])  # (C, rows)
    if id_column is None:
        return _segments(recording, values, segment_length, path)
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(table[id_column]):
        groups.setdefault(str(key), []).append(row)
    longest = max(len(rows) for rows in groups.values())
    x = np.full((len(groups), len(data_columns), longest), np.nan, dtype=np.float32)
    group_values = []
    for i, (key, rows) in enumerate(groups.items()):
        x[i, :, :len(rows)] = recording[:, rows]
        if values is not None:
            distinct = {str(values[r]) for r in rows}
            if len(distinct) > 1:
                raise ValueError(f"{path}: series {id_column}={key} has several labels ({', '.join(sorted(distinct))}) "
                                 f"in {label_column}; one series has one label")
            group_values.append(values[rows[0]])
    return x, group_values if values is not None else None


def _segments(recording: np.ndarray, values: list[Any] | None, length: int | None,
              path: Path) -> tuple[np.ndarray, list[Any] | None]:
    """One recording ``(C, L)`` (and a label per time step) as non-overlapping windows."""
    if length is None or length < 1:
        raise ValueError(f"{path}: holds one recording of {recording.shape[1]} time steps; set data.segment_length "
                         f"to cut it into series (or give data.id_column, the column naming each series)")
    count = recording.shape[1] // length
    if count == 0:
        raise ValueError(f"{path}: data.segment_length {length} is longer than the recording ({recording.shape[1]})")
    x = recording[:, :count * length].reshape(recording.shape[0], count, length).transpose(1, 0, 2)
    if values is None:
        return np.ascontiguousarray(x), None
    if len(values) != recording.shape[1]:
        raise ValueError(f"{path}: {recording.shape[1]} time steps but {len(values)} labels")
    return np.ascontiguousarray(x), [Counter(map(str, values[i * length:(i + 1) * length])).most_common(1)[0][0]
                                     for i in range(count)]


def _read_table(path: Path) -> dict[str, list[Any]]:
    """Columns of a ``.csv``/``.tsv`` (header row first) or ``.parquet`` file, in file order."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"{path}: reading .parquet needs pyarrow: pip install pyarrow (it comes with "
                                      f"selfsup-toolkit[text]), or save the table as .csv") from None
        return pyarrow.parquet.read_table(path).to_pydict()
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one row of values")
    header, body = rows[0], [row for row in rows[1:] if row]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} values, the header has {len(header)} columns")
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


def _numbers(values: list[Any], column: str, path: Path) -> np.ndarray:
    try:
        return np.array([math.nan if v is None or str(v).strip() in MISSING else float(v) for v in values],
                        dtype=np.float32)
    except ValueError:
        raise ValueError(f"{path}: column {column!r} is not numeric; name it as data.label_column or data.id_column, "
                         f"or list the numeric columns in data.channels") from None


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
