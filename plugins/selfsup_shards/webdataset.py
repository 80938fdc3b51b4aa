"""The ``webdataset`` data source: samples of WebDataset tar shards, read by seeking."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from selfsup_shards.decoding import AUDIO, IMAGE, TEXT, Decoding, decode
from selfsup_shards.sharded import UNREADABLE, OnError, ShardedSource, label_classes
from selfsup_shards.tars import OpenShards, expand, read_field, scan
from toolkit.compatibility import Contract, declare
from toolkit.data import split_folder
from toolkit.errors import DataError
from toolkit.shards import INDEX, ShardIndex, read_index

DEFAULT_ITEM = "jpg;jpeg;png;webp;flac;wav;npy;txt;json"


def _produces(params: dict[str, Any]) -> Contract:
    """``image``, ``sequence`` or ``text`` when ``item`` names fields of one such kind; else
    unchecked (``.npy`` holds anything; the index names the fields of packed shards)."""
    item = params.get("item")
    if not isinstance(item, str):
        return Contract()
    kinds = {"image" if field in IMAGE else "sequence" if field in AUDIO else "text" if field in TEXT else None
             for field in item.lower().split(";")}
    return Contract(produces=kinds) if len(kinds) == 1 and None not in kinds else Contract()


@declare(_produces)
class WebDataset(ShardedSource):
    """Samples of tar shards in the WebDataset layout (``selfsup data pack`` writes them).

    ``path`` is a folder of shards (its ``index.json``, else its ``*.tar`` files, sorted); a folder
    with ``train/`` and ``test/`` folders has its splits (``path/<split>/``). It may also be one
    ``.tar``, a pattern (``shards-{000..099}.tar``, ``{a,b}-*.tar``) or an ``index.json``;
    ``shards`` lists names or patterns inside the folder ``path``. A folder without a ``test/``
    folder, a pattern and a list are one list: ``train`` and ``test`` are a seeded held-out split
    (``eval.holdout_fraction``), ``all`` is every sample (``eval.test_data: {path: test-*.tar,
    split: all}`` for test shards of their own).

    ``item``: the field of each sample that is the item, alternatives separated by ``;``
    (``jpg;png``); a list gives tuple items (``[jpg, txt]``). Default: the fields in the index,
    else the first of ``jpg;jpeg;png;webp;flac;wav;npy;txt;json`` present. ``label``: the field
    holding the class index (``cls``); shards without it are unlabelled, ``null`` ignores it.
    Fields are decoded by extension (:mod:`selfsup_shards.decoding`); audio is resampled to
    the encoder's sample rate.

    Shards without an index are scanned once (headers, and the label fields) and the counts and
    labels cached beside them (``.selfsup-index-<hash>.json``, when the folder is writable). A
    sample that cannot be read stops the run with its shard and key, or, with ``on_error:
    skip``, is replaced, reported and counted (``data_errors``). Each epoch reads the shards in a
    seeded order, shuffled within windows of ``shuffle_buffer`` samples (``1``: each shard in its
    stored order; at least the data's size: the engine's uniform shuffle, as for any source).
    ``limit`` keeps a fixed random subset.
    """

    def __init__(self, path: Path, split: str = "train", shards: list[str] | None = None,
                 item: str | list[str] | None = None, label: str | None = "cls", on_error: OnError = "raise",
                 shuffle_buffer: int = 10_000, limit: int | None = None, holdout_fraction: float = 0.1,
                 input_spec: dict[str, Any] | None = None) -> None:
        files, index, one_list = _shard_files(Path(path), split, shards)
        where = f"shards {index.root / INDEX if index else files[0].parent}"
        packed = index is not None and bool(index.info)  # written by selfsup data pack: its labels are .cls
        if index is not None and (label is None or packed):
            counts, labels = index.counts, index.labels if label is not None and label == index.label else None
        else:
            counts, labels = _scanned(files, label)
        flat = torch.tensor([v for shard in labels for v in shard], dtype=torch.int64) if labels else None
        self.files = files
        self.select(counts, flat, split, one_list, limit, holdout_fraction, where, shuffle_buffer, on_error)
        own = index.info if packed else {}
        self.num_classes, self.class_names = label_classes(flat, own.get("classes"), own.get("num_classes"))
        fields = item if item is not None else (index.item if index is not None and index.item else DEFAULT_ITEM)
        self.slots = [spec.lower().split(";") for spec in ([fields] if isinstance(fields, str) else fields)]
        self.tuples = not isinstance(fields, str) and len(fields) > 1
        self.sample_rate = (input_spec or {}).get("sample_rate") or own.get("sample_rate")
        self.decoding = Decoding(channels=own.get("image_channels") or 3,
                                 sample_rate=(input_spec or {}).get("sample_rate"))
        self._open = OpenShards()

    def __getitem__(self, index: int) -> Any:
        shard, member = self.locate(index)
        path = self.files[shard]
        handle, (key, fields) = self._open.sample(path, member, int(self.counts[shard]))
        values = []
        for alternatives in self.slots:
            field = next((f for f in alternatives if f in fields), None)
            if field is None:
                raise self.unreadable(f"{path}: sample {key!r}", f"it has no {' or '.join(alternatives)} field, only "
                                      f"{', '.join(fields)}; set data.item to the field that holds the item")
            try:
                values.append(decode(field, read_field(handle, fields[field]), self.decoding))
            except UNREADABLE as error:
                raise self.unreadable(f"{path}: sample {key!r} ({field})", error) from None
        return tuple(values) if self.tuples else values[0]

    def item_id(self, index: int) -> str:
        """``<shard>:<key>``: where the sample is stored."""
        shard, member = self.locate(index)
        _, (key, _) = self._open.sample(self.files[shard], member, int(self.counts[shard]))
        return f"{self.files[shard].name}:{key}"


def _shard_files(path: Path, split: str, shards: list[str] | None) -> tuple[list[Path], ShardIndex | None, bool]:
    """The shard files, their index (when there is one) and whether they are one list to split."""
    if shards is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"data.path: {path} is not a folder; data.shards names shards inside it")
        return _existing([Path(name) for pattern in shards for name in expand(str(path / pattern))], path), None, True
    if path.is_dir():
        root, one_list = split_folder(path, split)
        if (root / INDEX).is_file():
            index = read_index(root / INDEX)
            return _existing([root / name for name in index.shards], root), index, one_list
        return _existing(sorted(root.glob("*.tar")), root), None, one_list
    if path.suffix == ".json" and path.is_file():
        index = read_index(path)
        return _existing([index.root / name for name in index.shards], path), index, True
    return _existing([Path(name) for name in expand(str(path))], path), None, True


def _existing(files: list[Path], where: Path) -> list[Path]:
    if not files:
        raise FileNotFoundError(f"data.path: no shards at {where} (a folder of .tar files, a pattern such as "
                                f"shards-{{000..009}}.tar, or an index.json); relative paths are resolved from the "
                                f"recipe's folder")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"data.path: {len(missing)} of {len(files)} shards do not exist, e.g. {missing[0]}")
    return files


def _scanned(files: list[Path], label: str | None) -> tuple[list[int], list[list[int]] | None]:
    """Sample counts and labels of shards without an index, scanned once and cached beside them."""
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    digest = hashlib.sha1(json.dumps([stats, label]).encode()).hexdigest()[:16]
    cache = files[0].parent / f".selfsup-index-{digest}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        return cached["counts"], cached["labels"]
    counts, labels = [], []
    for file in files:
        samples = scan(file)
        counts.append(len(samples))
        labels.append(_labels(file, samples, label) if label is not None else None)
    labelled = [shard_labels is not None for shard_labels in labels]
    if any(labelled) and not all(labelled):
        first = files[labelled.index(False)]
        raise DataError(f"{first}: its samples have no {label!r} field, but those of other shards do; label every "
                        f"sample, or set data.label: null to train without labels")
    result = (counts, labels if all(labelled) else None)
    try:
        temporary = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"counts": result[0], "labels": result[1]}), encoding="utf-8")
        os.replace(temporary, cache)
    except OSError:  # a read-only folder: scan again next time
        pass
    return result


def _labels(file: Path, samples: list, field: str) -> list[int] | None:
    """The ``field`` label of every sample of ``file``; ``None`` when no sample has that field."""
    if not any(field in fields for _, fields in samples):
        return None
    labels = []
    with open(file, "rb") as handle:
        for key, fields in samples:
            try:
                labels.append(int(read_field(handle, fields[field]).decode("ascii").strip()))
            except (KeyError, ValueError, EOFError) as error:
                raise DataError(f"{file}: sample {key!r} has no readable {field!r} label ({error!r}); every sample of "
                                f"labelled shards needs an integer class index there") from None
    return labels
