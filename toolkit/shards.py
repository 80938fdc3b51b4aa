"""Tar shards in the WebDataset layout: any data source written as shards (``selfsup data pack``),
and the JSON index that the writer and the ``webdataset`` data source share.

A shard is a plain tar file; a sample is the run of consecutive members that share a key (the
member name up to the first dot of its base name) and its fields are their extensions::

    00000042.png   00000042.cls       (an image and its class)
    00000043.flac  00000043.cls       (audio, lossless)
    00000044.npy                      (any tensor: series, clips)
    00000045.0.txt 00000045.1.txt     (a tuple of strings: numbered fields)

``index.json`` beside the shards follows the ``wids`` shard-index format (``shardlist`` of
``{url, nsamples}``; indexed-WebDataset readers take it as it is) with a ``selfsup`` section:
the fields, the classes, the count per class, and each shard's labels, so that a reader knows
its length and labels without opening a shard.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, TextIO

import numpy as np
import torch
import yaml
from torch import Tensor

from toolkit.components import Resolved
from toolkit.errors import DataError, RecipeError
from toolkit.extras import require
from toolkit.interfaces import DataSource
from toolkit.rundir import write_atomic

if TYPE_CHECKING:
    from toolkit.plugins import Plugins

INDEX = "index.json"
SHARD_NAME = "shard-{:06d}.tar"
FORMAT_VERSION = 1
ImageFormat = Literal["png", "jpg"]


@dataclass(frozen=True)
class ShardIndex:
    """What ``index.json`` says of a set of shards: their files (relative to ``root``), the samples
    in each, the item fields (``["png"]``, or ``["0.txt", "1.txt"]`` for tuples), the label field
    (``"cls"``, or ``None``: unlabelled), the class names and each shard's labels."""

    root: Path
    shards: list[str]
    counts: list[int]
    item: list[str]
    label: str | None
    classes: list[str] | None
    num_classes: int | None
    labels: list[list[int]] | None
    info: dict[str, Any]


def read_index(path: Path) -> ShardIndex:
    """The index at ``path`` (an ``index.json``); a file another tool wrote with only the ``wids``
    part gives the shards and counts, and no fields or labels."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        shards = [entry["url"] for entry in data["shardlist"]]
        counts = [int(entry["nsamples"]) for entry in data["shardlist"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a shard index (JSON with a shardlist of {{url, nsamples}}: {error}); re-create "
                        f"it with `selfsup data pack`, or point data.path at the shards themselves") from None
    own = data.get("selfsup", {})
    labelled = own.get("label") is not None and all("labels" in entry for entry in data["shardlist"])
    return ShardIndex(Path(path).parent, shards, counts, list(own.get("item", [])), own.get("label"),
                      own.get("classes"), own.get("num_classes"),
                      [list(entry["labels"]) for entry in data["shardlist"]] if labelled else None, own)


def pack(spec: str, out_dir: Path, plugins: Plugins, overrides: Sequence[str] = (), splits: Sequence[str] = (),
         shard_size: int = 1000, image_format: ImageFormat = "png", sample_rate: int | None = None,
         shuffle: bool = True, log: TextIO | None = None) -> list[ShardIndex]:
    """``selfsup data pack``: the data source ``spec`` as shards in ``out_dir`` (each of ``splits``
    in ``out_dir/<split>/``, the layout the ``webdataset`` source reads by split); one index each.

    ``spec`` is a recipe file, whose ``data`` block is packed (``overrides`` such as ``data.limit=100``
    apply, and its paths are relative to it), or an inline block ``{name: fsdd, path: fsdd.npz}``
    (paths relative to the working directory). The source is built as training would build it,
    but at its native sample rate unless ``sample_rate`` is given, and holding out
    ``eval.holdout_fraction`` of one-list layouts as the recipe would. Progress goes to ``log``
    (default stderr).
    """
    from toolkit.config import EvalConfig
    from toolkit.progress import Progress
    from toolkit.recipe import load_and_resolve, plain_block, resolve_block

    log = log or sys.stderr

    if Path(spec).is_file():
        recipe = load_and_resolve(spec, overrides, plugins)
        block, holdout = recipe.components["data"], recipe.block("eval")["holdout_fraction"]
    else:
        if overrides:
            raise RecipeError(f"key=value settings apply to a recipe file; {spec!r} is an inline block: write the "
                              f"settings into it")
        try:
            parsed = yaml.safe_load(spec)
        except yaml.YAMLError as error:
            raise RecipeError(f"{spec!r} is neither a recipe file nor a data block ({error})") from None
        block, holdout = resolve_block(plugins, "datasource", parsed, "data block"), EvalConfig().holdout_fraction
    indexes = []
    for split in splits or [None]:
        resolved = block if split is None else Resolved(block.component, {**block.params, "split": split})
        spec_given = {"sample_rate": sample_rate} if sample_rate else {}
        source = resolved.build(holdout_fraction=holdout, input_spec=spec_given)
        target = Path(out_dir) / split if split is not None else Path(out_dir)
        note = f" ({source.split_note})" if source.split_note else ""
        print(f"packing {len(source)} items of {block.component.name} split {resolved.params.get('split')!r}{note} "
              f"into {target}", file=log, flush=True)
        with Progress(len(source), f"pack {split or ''}".strip(), stream=log) as progress:
            index = pack_source(source, target, shard_size, image_format, sample_rate, shuffle, plain_block(resolved),
                                progress.update)
        classes = f", {index.num_classes} classes" if index.num_classes else ""
        print(f"{target}: {len(index.shards)} shards, {sum(index.counts)} samples ({', '.join(index.item)}"
              f"{' + cls' if index.label else ''}){classes}; index {target / INDEX}", file=log, flush=True)
        indexes.append(index)
    return indexes


def pack_source(source: DataSource, out_dir: Path, shard_size: int = 1000, image_format: ImageFormat = "png",
                sample_rate: int | None = None, shuffle: bool = True, description: dict[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> ShardIndex:
    """Write every item of ``source`` (with its label) to ``out_dir`` as tar shards of
    ``shard_size`` samples, then ``index.json``; return the index.

    With ``shuffle`` the items go to the shards in a fixed random order (seed 0), so that a source
    sorted by class (or by recording) gives shards that each hold a bit of everything, and a
    batch read from one or two shards is as mixed as one drawn from all the data. A sample's key
    is its item's index in ``source`` either way.

    Items to bytes: uint8 images ``(C, H, W)`` as PNG (lossless; ``image_format: jpg`` for JPEG
    at quality 95), audio ``(C, L)`` as 24-bit FLAC when the source has a ``sample_rate`` (or
    ``sample_rate`` is given; exact for 16-bit audio), other tensors and arrays as ``.npy``,
    strings as ``.txt`` (UTF-8), tuples field by field; labels as ``.cls``. ``description`` (the
    source's recipe block) is kept in the index. ``progress`` is called with the number of
    items written after each one. Shards are written to a temporary name and renamed, and the
    index last, so an interrupted pack leaves no index that lists a partial shard.
    """
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rate = sample_rate or getattr(source, "sample_rate", None)
    labels = source.labels
    width = max(8, len(str(len(source) - 1)))
    order = (torch.randperm(len(source), generator=torch.Generator().manual_seed(0)) if shuffle
             else torch.arange(len(source)))
    shards, counts, shard_labels, item_fields = [], [], [], None
    for first in range(0, len(source), shard_size):
        name = SHARD_NAME.format(len(shards))
        positions = order[first:first + shard_size].tolist()
        fields = _write_shard(out_dir / name, source, positions, labels, width, image_format, rate, progress)
        if item_fields is not None and fields != item_fields:
            raise DataError(f"{out_dir / name}: its items are stored as {fields}, earlier ones as {item_fields}; a "
                            f"shard set holds items of one kind")
        item_fields = fields
        shards.append(name)
        counts.append(len(positions))
        if labels is not None:
            shard_labels.append(labels[positions].tolist())
    classes = _class_names(source)
    num_classes = source.num_classes if labels is not None else None
    own = {"version": FORMAT_VERSION, "count": len(source), "item": item_fields or [],
           "label": "cls" if labels is not None else None, "classes": classes, "num_classes": num_classes,
           "class_counts": (torch.bincount(labels, minlength=num_classes or 0).tolist() if labels is not None
                            else None),
           "sample_rate": rate, "image_channels": _image_channels(source[0]) if len(source) else None,
           "split_note": source.split_note, "source": description}
    shardlist = [{"url": name, "nsamples": count, **({"labels": shard_labels[i]} if labels is not None else {})}
                 for i, (name, count) in enumerate(zip(shards, counts))]
    write_atomic(out_dir / INDEX, json.dumps({"wids_version": 1, "shardlist": shardlist, "selfsup": own}))
    return read_index(out_dir / INDEX)


def encode_item(item: Any, image_format: ImageFormat = "png", sample_rate: int | None = None,
                prefix: str = "") -> list[tuple[str, bytes]]:
    """``[(field, bytes), ...]`` of one item (see :func:`pack_source` for the formats); a tuple or
    list of items gives fields ``0.<ext>``, ``1.<ext>``, ..."""
    if isinstance(item, (tuple, list)):
        return [field for i, part in enumerate(item) for field in encode_item(part, image_format, sample_rate,
                                                                               f"{prefix}{i}.")]
    if isinstance(item, str):
        return [(f"{prefix}txt", item.encode("utf-8"))]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, Tensor):
        raise DataError(f"cannot store an item of type {type(item).__name__} in a shard (tensors, arrays, strings and "
                        f"tuples of them are stored; a video source packs with data.unit: frame or clip)")
    item = item.detach().cpu()
    if item.dtype == torch.uint8 and item.dim() == 3 and item.shape[0] in (1, 3):
        from torchvision.io import encode_jpeg, encode_png

        if image_format == "jpg":
            return [(f"{prefix}jpg", encode_jpeg(item, quality=95).numpy().tobytes())]
        return [(f"{prefix}png", encode_png(item).numpy().tobytes())]
    if item.is_floating_point() and item.dim() == 2 and sample_rate and not item.isnan().any():
        soundfile = require("soundfile", "packing audio as FLAC")
        buffer = io.BytesIO()
        soundfile.write(buffer, item.T.float().numpy(), int(sample_rate), format="FLAC", subtype="PCM_24")
        return [(f"{prefix}flac", buffer.getvalue())]
    buffer = io.BytesIO()
    np.save(buffer, item.numpy(), allow_pickle=False)
    return [(f"{prefix}npy", buffer.getvalue())]


def _write_shard(path: Path, source: DataSource, positions: Sequence[int], labels: Tensor | None, width: int,
                 image_format: ImageFormat, sample_rate: int | None,
                 progress: Callable[[int], None] | None) -> list[str]:
    """Write the samples at ``positions`` to the shard ``path``; return their item fields."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fields = _write_tar(temporary, source, positions, labels, width, image_format, sample_rate, progress)
    except BaseException:
        temporary.unlink(missing_ok=True)  # an item that cannot be encoded leaves no half-written shard behind
        raise
    os.replace(temporary, path)
    return fields or []


def _write_tar(temporary: Path, source: DataSource, positions: Sequence[int], labels: Tensor | None, width: int,
               image_format: ImageFormat, sample_rate: int | None,
               progress: Callable[[int], None] | None) -> list[str] | None:
    """Encode the samples at ``positions`` into the tar ``temporary``; return their item fields."""
    fields: list[str] | None = None
    with tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as tar:
        for position in positions:
            key = f"{position:0{width}d}"
            encoded = encode_item(source[position], image_format, sample_rate)
            names = [field for field, _ in encoded]
            if fields is not None and names != fields:
                raise DataError(f"item {position} would be stored as {names}, the items before it as {fields}; a shard "
                                f"set holds items of one kind (cast the source's items to one type)")
            fields = names
            if labels is not None:
                encoded.append(("cls", str(int(labels[position])).encode("ascii")))
            for field, data in encoded:
                member = tarfile.TarInfo(f"{key}.{field}")
                member.size, member.mode, member.mtime = len(data), 0o644, 0  # reproducible bytes
                tar.addfile(member, io.BytesIO(data))
            if progress is not None:
                progress(1)
    return fields


def _image_channels(item: Any) -> int | None:
    """1 or 3 for an image item (a reader decodes it with that many channels), else ``None``."""
    if isinstance(item, Tensor) and item.dtype == torch.uint8 and item.dim() == 3 and item.shape[0] in (1, 3):
        return int(item.shape[0])
    return None


def _class_names(source: DataSource) -> list[str] | None:
    for attribute in ("classes", "class_names"):
        names = getattr(source, attribute, None)
        if isinstance(names, Sequence) and not isinstance(names, str) and len(names):
            return [str(name) for name in names]
    return None
