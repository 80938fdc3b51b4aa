"""Local tables through Hugging Face ``datasets``: the one way the data sources open them (the text
source's tables, the ``hf-dataset`` source), memory-mapped Arrow in every case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.extras import require

TABLE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".arrow": ("arrow", {}),
    ".txt": ("text", {}),
}
"""File suffix -> the ``datasets`` builder that reads it, and its options."""


def open_table(path: Path) -> Any:
    """A ``datasets.Dataset`` or ``DatasetDict`` (by split) of the local data at ``path``:

    - a folder written by ``save_to_disk`` (``load_from_disk``: memory-mapped, no copy);
    - an ``.arrow`` file (``Dataset.from_file``: memory-mapped, no copy);
    - a ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet``/``.txt`` file (read by ``datasets``,
      converted once into its Arrow cache);
    - a folder of such files, in the Hub's layouts (``<split>-*.parquet``, ``<split>/*.parquet``,
      ``data/<split>-*.parquet``): a ``DatasetDict`` keyed by split, the files of each split
      in name order.

    Unreadable data raises ``ValueError`` naming ``path``.
    """
    datasets = require("datasets", f"reading {path}")
    path = Path(path)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
        if path.is_dir():
            builder, options, by_split = _folder_files(path)
            return datasets.load_dataset(builder, data_files=by_split, **options)
        if path.suffix.lower() == ".arrow":
            return datasets.Dataset.from_file(str(path))
        builder, options = table_format(path)
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
        raise ValueError(f"{path}: cannot read it as a table ({error})") from None


def table_format(path: Path) -> tuple[str, dict[str, Any]]:
    """The builder and options for a table file, by suffix."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use one of {', '.join(TABLE_FORMATS)}")
    return TABLE_FORMATS[suffix]


def split_of(name: str) -> str:
    """The split of a data file in the Hub's naming, from its path inside the data folder: the
    first folder (``test/part-0.parquet`` -> ``test``), else the part of the file name before a
    ``-`` (``train-00000-of-00002.parquet`` -> ``train``), else ``train``."""
    parts = Path(name).parts
    if len(parts) > 1:
        return parts[0]
    stem, dash, _ = Path(name).name.partition("-")
    return stem if dash and stem else "train"


def _folder_files(folder: Path) -> tuple[str, dict[str, Any], dict[str, list[str]]]:
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in TABLE_FORMATS and f.is_file()
                   and not f.name.startswith("."))
    if not files:
        raise ValueError(f"no {', '.join(TABLE_FORMATS)} files and no save_to_disk layout in it")
    suffixes = {f.suffix.lower() for f in files}
    if len(suffixes) > 1:
        raise ValueError(f"it holds files of several formats ({', '.join(sorted(suffixes))}); keep one per folder")
    builder, options = table_format(files[0])
    by_split: dict[str, list[str]] = {}
    for file in files:
        relative = file.relative_to(folder)
        parts = relative.parts[1:] if relative.parts[0] == "data" and len(relative.parts) > 1 else relative.parts
        by_split.setdefault(split_of("/".join(parts)), []).append(str(file))
    return builder, options, by_split
