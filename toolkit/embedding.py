"""Embed files with a trained encoder: ``selfsup embed RUN_DIR|ENCODER_DIR INPUT --out FILE``.

The input is read by the data sources the plugins already have, chosen from what the encoder's
augmentation consumes (its contract, :mod:`toolkit.compatibility`) and the input's layout:

=========  ==========================================================================
image      a folder of images (``image-folder``: class folders give labels), an npz of
           arrays (``image-npz``) or JPEG bytes (``image-jpeg-npz``)
text       a ``.txt`` file, one sentence per line, or a column of a ``.csv``/``.tsv``/
           ``.jsonl``/``.json``/``.parquet`` table (``text``, ``--column``)
sequence   a folder of ``.wav``/``.flac`` files (``audio-folder``), an FSDD or UCR npz
           (``fsdd``, ``ucr-npz``), a ``.npy``/``.csv``/``.tsv``/``.parquet`` of series (``series``)
video      a folder of video files (``video-files``) or of frame folders (``frame-folders``),
           a frame-array npz (``frame-arrays``); one vector per video
=========  ==========================================================================

``--source NAME`` picks any registered data source instead, ``--data key=value`` sets its
parameters. Items go through the export's evaluation transform, the encoder's collate and the
encoder in batches (:func:`toolkit.evaluation.embed_items`, as evaluation does), so the vectors
are those the run's kNN evaluation saw. An unreadable item stops with its name, or is left out
with ``skip_bad`` (each named on the log).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
import yaml

from toolkit.errors import DataError, RecipeError

FORMATS = (".npy", ".npz", ".parquet")
TABLES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SERIES_FILES = (".npy", ".csv", ".tsv", ".parquet")
VIDEO_FILES = (".mp4", ".avi", ".webm", ".mkv", ".mov")
FRAME_FILES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Embeddings:
    """Vectors ``(N, D)`` float32 of ``N`` items, their ``ids`` (file paths relative to the
    input, line or row numbers, indices) and labels ``(N,)`` int64 where the layout has them."""

    ids: list[str]
    vectors: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    """``"id: reason"`` of each item left out (``skip_bad``)."""

    def save(self, path: str | Path) -> Path:
        """Write ``.npy`` (the vectors alone), ``.npz`` (``vectors``, ``ids``, ``labels``) or
        ``.parquet`` (columns ``id``, ``label``, ``vector``: a fixed-size list of float32)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise DataError(f"--out {path}: write {', '.join(FORMATS)} (the suffix chooses the format)")
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            if suffix == ".parquet":
                self._parquet(temporary)
            else:
                with open(temporary, "wb") as handle:
                    if suffix == ".npy":
                        np.save(handle, self.vectors)
                    else:
                        arrays = {"vectors": self.vectors, "ids": np.array(self.ids, dtype=str)}
                        if self.labels is not None:
                            arrays["labels"] = self.labels
                        np.savez(handle, **arrays)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path

    def _parquet(self, path: Path) -> None:
        from toolkit.extras import require

        pyarrow = require("pyarrow", "writing embeddings as parquet (or write .npz)")
        import pyarrow.parquet

        columns: dict[str, Any] = {"id": pyarrow.array(self.ids, pyarrow.string())}
        if self.labels is not None:
            columns["label"] = pyarrow.array(self.labels, pyarrow.int64())
        flat = pyarrow.array(self.vectors.reshape(-1), pyarrow.float32())
        columns["vector"] = pyarrow.FixedSizeListArray.from_arrays(flat, self.vectors.shape[1])
        pyarrow.parquet.write_table(pyarrow.table(columns), path)


def embed(model: str | Path, input: str | Path, out: str | Path | None = None, split: str | None = None,
          column: str | None = None, source: str | None = None, data: Sequence[str] = (), batch_size: int = 256,
          device: str = "auto", skip_bad: bool = False, holdout_fraction: float = 0.1, plugins: Any = None,
          log: TextIO | None = None) -> Embeddings:
    """Embed ``input`` with the encoder of ``model`` (a run directory or an encoder export);
    write them to ``out`` when given. ``split`` is required for layouts that hold several
    (``train``/``test`` folders, an npz with ``*_test`` arrays) and may name one of a single
    list (its held-out ``test`` part by ``holdout_fraction``, as training did); ``column`` is the
    text column of a table; ``source`` and ``data`` (``key=value``) choose the data source."""
    import torch

    from toolkit.engine import resolve_device
    from toolkit.evaluation import embed_items
    from toolkit.export import load_encoder, load_eval_transform, read_metadata
    from toolkit.plugins import default_plugins
    from toolkit.progress import Progress
    from toolkit.recipe import build

    log = log or sys.stderr
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise DataError(f"--out {out}: write {', '.join(FORMATS)} (the suffix chooses the format)")
    plugins = plugins or default_plugins()
    export = encoder_folder(model)
    metadata = read_metadata(export)
    input = Path(input)
    if not input.exists():
        raise DataError(f"{input} does not exist; give a folder of files, a text/table file or an npz")
    block = data_block(input, _consumes(plugins, metadata), split, column, source, data)
    encoder = load_encoder(export, plugins)
    transform = load_eval_transform(export, plugins)
    items = build(plugins, "datasource", block, input_spec=encoder.input_spec, holdout_fraction=holdout_fraction,
                  device=torch.device("cpu"))
    target = resolve_device(device)
    encoder.to(target)
    skipped: list[str] = []

    def skip(position: int, error: Exception) -> None:
        skipped.append(f"{_relative(items.item_id(position), input)}: {error}")
        print(f"skipped {skipped[-1]}", file=log, flush=True)

    def refuse(position: int, error: Exception) -> None:
        raise DataError(f"{error} (pass --skip-bad to leave unreadable items out)") from error

    print(f"embedding {len(items)} items of {input} ({block['name']}) with {export} on {target}", file=log, flush=True)
    with Progress(len(items), "embedding", stream=log) as progress:
        try:
            vectors, kept = embed_items(encoder, transform, items, target, batch_size, progress=progress,
                                        skip=skip if skip_bad else refuse)
        except DataError:
            raise
        except (ValueError, OSError) as error:  # from the collate or the encoder: leaving items out cannot help
            raise DataError(str(error)) from None
    labels = items.labels[kept].numpy() if items.labels is not None and _labels_are_classes(block) else None
    names = [items.class_name(c) for c in range(int(items.num_classes or 0))] if labels is not None else None
    result = Embeddings([_relative(items.item_id(i), input) for i in kept], vectors.numpy(), labels, names, skipped)
    if out is not None:
        result.save(out)
        print(f"wrote {len(kept)} vectors of {vectors.shape[1]} dimensions to {out}"
              + (f" ({len(skipped)} unreadable items skipped)" if skipped else ""), file=log, flush=True)
    return result


def encoder_folder(model: str | Path) -> Path:
    """The export to load: ``model`` itself (it holds ``encoder.json``) or ``model/encoder`` (a run directory)."""
    model = Path(model)
    for candidate in (model, model / "encoder"):
        if (candidate / "encoder.json").is_file():
            return candidate
    raise DataError(f"{model} is neither a run directory with an exported encoder ({model / 'encoder'}) nor an "
                    f"encoder export (a folder with encoder.json); train first, or `selfsup export RUN_DIR`")


def data_block(input: Path, consumes: frozenset[str], split: str | None, column: str | None, source: str | None,
               data: Sequence[str]) -> dict[str, Any]:
    """The data source block (``{name, path, split, ...}``) that reads ``input`` for an encoder
    whose augmentation consumes ``consumes``."""
    if source is None:
        source, params = _layout(input, consumes, column)
    else:
        params = {"columns": [column]} if column else {}
    layered = _splits(input)
    if split is None and layered:
        raise DataError(f"{input} holds the splits {', '.join(layered)}; choose one with --split (e.g. --split "
                        f"{layered[-1]})")
    block = {"name": source, "path": str(input), "split": split or "all", **params}
    for setting in data:
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise RecipeError(f"--data {setting!r}: expected key=value, e.g. --data limit=100")
        block[key] = yaml.safe_load(value)
    return block


def _layout(input: Path, consumes: frozenset[str], column: str | None) -> tuple[str, dict[str, Any]]:
    """The data source (and parameters) that reads ``input`` for data of ``consumes``."""
    suffix = input.suffix.lower()
    kind = next((tag for tag in ("image", "text", "sequence", "video") if tag in consumes), None)
    if kind == "image":
        if input.is_dir():
            return "image-folder", {}
        if suffix == ".npz":
            return ("image-jpeg-npz" if any(k.startswith("jpeg") for k in _npz_keys(input)) else "image-npz"), {}
    elif kind == "text":
        if suffix == ".txt" and column is None:
            return "text", {}
        if suffix in TABLES or suffix == ".txt":
            return "text", ({"columns": [column]} if column else {})
    elif kind == "sequence":
        if input.is_dir():
            nested = all(f.parent != input for f in input.rglob("*") if f.suffix.lower() in (".wav", ".flac"))
            return "audio-folder", {"label": "folder" if nested else "none"}
        if suffix == ".npz":
            return ("fsdd" if {"audio", "offsets"} <= set(_npz_keys(input)) else "ucr-npz"), {}
        if suffix in SERIES_FILES:
            return "series", {}
    elif kind == "video":
        if input.is_dir():  # class folders hold the videos: input/<class>/<video>.mp4 or input/<class>/<video>/
            videos = [f for f in input.rglob("*") if f.suffix.lower() in VIDEO_FILES]
            if videos:
                homes = {f.parent for f in videos}
            else:
                homes = {f.parent.parent for f in input.rglob("*") if f.suffix.lower() in FRAME_FILES}
            nested = bool(homes) and input not in homes
            return ("video-files" if videos else "frame-folders"), {"unit": "video",
                                                                   "label": "class" if nested else "video"}
        if suffix == ".npz":
            return "frame-arrays", {"unit": "video", "label": "video"}
    what = kind or ", ".join(sorted(consumes)) or "undeclared items"
    raise DataError(f"{input}: no built-in way to read it for an encoder of {what}; name a data source and its "
                    f"settings: --source NAME --data key=value (`selfsup plugins --all` lists the data sources)")


def _splits(input: Path) -> list[str]:
    """The splits a layout holds itself (``["test", "train"]``: a ``test/`` folder, ``*_test``
    arrays, FSDD's ``is_test``), or ``[]`` for one list of items."""
    if input.is_dir():
        return sorted(p.name for p in input.iterdir() if p.is_dir()) if (input / "test").is_dir() else []
    if input.suffix.lower() == ".npz":
        keys = _npz_keys(input)
        if "is_test" in keys or any(key.endswith("_test") for key in keys):
            return ["test", "train"]
    return []


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from None


def _consumes(plugins: Any, metadata: dict[str, Any]) -> frozenset[str]:
    from toolkit.compatibility import contract_of

    block = metadata["augmentation"]
    contract = contract_of(plugins.get("augmentation", block["name"]).factory, block)
    return contract.consumes if contract is not None else frozenset()


def _labels_are_classes(block: dict[str, Any]) -> bool:
    """Whether the source's labels name classes (a video source's ``label: video`` only numbers the videos)."""
    return block.get("label") != "video"


def _relative(item_id: str, root: Path) -> str:
    """A file path under ``root`` as a path relative to it; any other id as it is."""
    try:
        return str(Path(item_id).relative_to(root))
    except ValueError:
        return item_id
