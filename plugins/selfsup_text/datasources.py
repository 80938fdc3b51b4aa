"""Text data sources: a plain text file (one sentence per line) or any table ``datasets`` reads.

An item is a string, or a tuple of strings when several columns are named (NLI triples
``(anchor, entailment, contradiction)`` for supervised SimCSE). Neither source loads the text
into memory: a text file is indexed by byte offsets and read line by line on access, a table
is memory-mapped through ``datasets``' Arrow cache. Text sources have no labels.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.compatibility import Contract, declare
from toolkit.data import subset_indices
from toolkit.extras import require
from toolkit.interfaces import DataSource

TABLE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}


@declare(Contract(produces={"text"}))
def text_source(
    path: Path, split: str = "train", columns: list[str] | None = None, limit: int | None = None
) -> DataSource:
    """The ``text`` data source: ``path`` is a ``.txt`` file (one sentence per line) when
    ``columns`` is not given, else a local ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet``/``.txt``
    file read by ``datasets`` (a ``.txt`` file then has the single column ``text``).

    A table (every format but ``.txt``) has a header or field names: with one field it is the
    text, with several ``columns`` must name the ones to use (the error lists them), so a header
    line never becomes a sentence. One column gives string items, several give tuples in the
    order named. Empty lines (or rows with an empty cell) are skipped and counted in ``skipped``.
    ``limit`` keeps a fixed random subset. ``split`` is accepted like every data source's; a
    file is one split, so it is unused. Text sources have no labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} is not a file (relative paths are resolved from the recipe's "
                                f"folder)")
    if columns is None and path.suffix.lower() in TABLE_FORMATS and path.suffix.lower() != ".txt":
        fields = table_fields(path)
        if len(fields) != 1:
            raise ValueError(f"{path}: a table with the columns {', '.join(fields)}; name the text column(s) in the "
                             f"recipe, e.g. data.columns: [{fields[-1]}] (several columns give tuples, such as NLI "
                             f"triples)")
        columns = fields
    if columns is None:
        return TextLines(path, limit)
    return TextTable(path, columns, limit)


def table_fields(path: Path) -> list[str]:
    """The column names of a ``.csv``/``.tsv`` header, of the first record of a ``.json``/``.jsonl``
    file, or of a ``.parquet`` schema, read without loading the table."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet

        return list(pyarrow.parquet.read_schema(path).names)
    with open(path, encoding="utf-8", newline="") as handle:
        if suffix in (".csv", ".tsv"):
            return next(csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ","), [])
        first = next((line for line in handle if line.strip()), "")
        try:
            record = json.loads(first)
        except json.JSONDecodeError:  # a .json file holding one array of records over many lines
            handle.seek(0)
            records = json.load(handle)
            record = records[0] if isinstance(records, list) and records else records
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected JSON records (objects with named fields), got {type(record).__name__}")
    return list(record)


class TextLines(DataSource):
    """The non-empty lines of a UTF-8 text file, surrounding whitespace stripped.

    Construction scans the file once, checks that every line decodes and keeps only the byte
    offset of each non-empty line (16 bytes per line: wiki1m's 1M sentences cost 16 MB);
    ``source[i]`` seeks and reads one line.
    """

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path = Path(path)
        starts, ends, self.skipped = _index_lines(self.path)
        if not starts:
            raise ValueError(f"{self.path}: no non-empty lines; expected one sentence per line")
        keep = subset_indices(len(starts), limit).numpy()
        self.starts = np.asarray(starts, dtype=np.int64)[keep]
        self.ends = np.asarray(ends, dtype=np.int64)[keep]
        self._handle: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> str:
        handle = self._file()
        start = int(self.starts[index])
        handle.seek(start)
        return handle.read(int(self.ends[index]) - start).decode("utf-8").strip()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self) -> Any:
        # one handle per process: a forked data-loader worker must not share the parent's file position
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open(self.path, "rb"), os.getpid()
        return self._handle


class TextTable(DataSource):
    """Named string columns of a local table file read by ``datasets`` (memory-mapped Arrow)."""

    def __init__(self, path: Path, columns: list[str], limit: int | None = None) -> None:
        datasets = require("datasets", f"reading the table {path}")

        if not columns:
            raise ValueError("data.columns: name at least one column, or leave it out for a one-sentence-per-line "
                             "text file")
        builder, options = _table_format(path)
        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
            raise ValueError(f"{path}: cannot read it as {builder} ({error})") from None
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; data.columns must name some of "
                             f"{', '.join(table.column_names)}")
        table = table.select_columns(columns)
        complete = table.filter(_complete, input_columns=columns, batched=True)
        self.skipped = len(table) - len(complete)
        if len(complete) == 0:
            raise ValueError(f"{path}: no row has all of {', '.join(columns)} non-empty")
        self.table = complete.select(subset_indices(len(complete), limit).tolist())
        self.columns = list(columns)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> str | tuple[str, ...]:
        row = self.table[int(index)]
        values = tuple(str(row[c]).strip() for c in self.columns)
        return values[0] if len(values) == 1 else values


def _index_lines(path: Path) -> tuple[list[int], list[int], int]:
    """Byte ranges of the non-empty lines of ``path`` and the number of empty ones."""
    starts, ends, skipped, offset = [], [], 0, 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start} of the "
                                 f"line); re-encode the file as UTF-8 or remove the line") from None
            if text.strip():
                starts.append(offset)
                ends.append(offset + len(line))
            else:
                skipped += 1
            offset += len(line)
    return starts, ends, skipped


def _table_format(path: Path) -> tuple[str, dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use one of {', '.join(TABLE_FORMATS)}")
    return TABLE_FORMATS[suffix]


def _complete(*columns: list[Any]) -> list[bool]:
    return [all(v is not None and str(v).strip() for v in row) for row in zip(*columns)]
