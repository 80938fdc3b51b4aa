"""Text data sources: a plain text file (one sentence per line) or any table ``datasets`` reads.

An item is a string, or a tuple of strings when several columns are named (NLI triples
``(anchor, entailment, contradiction)`` for supervised SimCSE). Neither source loads the text
into memory: a text file is indexed by byte offsets and read line by line on access, a table
is memory-mapped through ``datasets``' Arrow cache. A table's ``label_column`` gives labels
(classes in sorted order: kNN and a linear probe on, say, topic labels); text files have none.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.compatibility import Contract, declare
from toolkit.data import subset_indices
from toolkit.interfaces import DataSource
from toolkit.tables import TABLE_FORMATS, open_table


@declare(Contract(produces={"text"}))
def text_source(
    path: Path, split: str = "train", columns: list[str] | None = None, limit: int | None = None,
    label_column: str | None = None,
) -> DataSource:
    """The ``text`` data source: ``path`` is a ``.txt`` file (one sentence per line) when
    ``columns`` is not given, else a local ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet``/``.txt``
    file read by ``datasets`` (a ``.txt`` file then has the single column ``text``).

    A table (every format but ``.txt``) has a header or field names: with one field it is the
    text, with several ``columns`` must name the ones to use (the error lists them), so a header
    line never becomes a sentence. One column gives string items, several give tuples in the
    order named. Empty lines (or rows with an empty cell) are skipped and counted in ``skipped``.
    ``limit`` keeps a fixed random subset. ``split`` is accepted like every data source's; a
    file is one split, so it is unused. ``label_column`` (tables only) names a column of class
    labels (any values; classes in sorted order); without it the text is unlabelled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} is not a file (relative paths are resolved from the recipe's "
                                f"folder)")
    if columns is None and path.suffix.lower() in TABLE_FORMATS and path.suffix.lower() != ".txt":
        fields = [f for f in table_fields(path) if f != label_column]
        if len(fields) != 1:
            raise ValueError(f"{path}: a table with the columns {', '.join(fields)}; name the text column(s) in the "
                             f"recipe, e.g. data.columns: [{fields[-1]}] (several columns give tuples, such as NLI "
                             f"triples)")
        columns = fields
    if columns is None:
        if label_column is not None:
            raise ValueError(f"data.label_column: {path} is a text file, one sentence per line, with no columns; "
                             f"labels come from a table (.csv, .tsv, .jsonl, .parquet)")
        return TextLines(path, limit)
    return TextTable(path, columns, limit, label_column)


def table_fields(path: Path) -> list[str]:
    """The column names of a ``.csv``/``.tsv`` header, of the first record of a ``.json``/``.jsonl``
    file, or of a ``.parquet`` schema, read without loading the table."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet

        return list(pyarrow.parquet.read_schema(path).names)
    if suffix == ".arrow":
        return list(open_table(path).column_names)  # memory-mapped: only the schema is read
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
        starts, ends, numbers, self.skipped = _index_lines(self.path)
        if not starts:
            raise ValueError(f"{self.path}: no non-empty lines; expected one sentence per line")
        keep = subset_indices(len(starts), limit).numpy()
        self.starts = np.asarray(starts, dtype=np.int64)[keep]
        self.ends = np.asarray(ends, dtype=np.int64)[keep]
        self.line_numbers = np.asarray(numbers, dtype=np.int64)[keep]
        self._handle: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> str:
        handle = self._file()
        start = int(self.starts[index])
        handle.seek(start)
        return handle.read(int(self.ends[index]) - start).decode("utf-8").strip()

    def item_id(self, index: int) -> str:
        return f"line {int(self.line_numbers[index])}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self) -> Any:
        # one handle per process: a forked data-loader worker must not share the parent's file position
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open(self.path, "rb"), os.getpid()
        return self._handle


class TextTable(DataSource):
    """Named string columns of a local table file read by ``datasets`` (memory-mapped Arrow),
    labelled by ``label_column`` when given."""

    ROW = "__selfsup_row__"
    """A column added to remember each row's number through the filtering of incomplete rows."""

    def __init__(self, path: Path, columns: list[str], limit: int | None = None,
                 label_column: str | None = None) -> None:
        if not columns:
            raise ValueError("data.columns: name at least one column, or leave it out for a one-sentence-per-line "
                             "text file")
        table = open_table(path)  # the mechanism the hf-dataset source reads tables with
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; data.columns must name some of "
                             f"{', '.join(table.column_names)}")
        if label_column is not None and label_column not in table.column_names:
            raise ValueError(f"{path}: data.label_column: no column {label_column!r}; the columns are "
                             f"{', '.join(table.column_names)}")
        needed = [*columns, *([label_column] if label_column else [])]
        table = table.select_columns(needed).add_column(self.ROW, list(range(len(table))))
        complete = table.filter(_complete, input_columns=needed, batched=True)
        self.skipped = len(table) - len(complete)
        if len(complete) == 0:
            raise ValueError(f"{path}: no row has all of {', '.join(needed)} non-empty")
        self.table = complete.select(subset_indices(len(complete), limit).tolist())
        self.columns = list(columns)
        if label_column is not None:
            values = [str(v).strip() for v in self.table[label_column]]
            self.class_names = sorted(set(str(v).strip() for v in complete[label_column]))
            self.labels = torch.tensor([self.class_names.index(v) for v in values], dtype=torch.int64)
            self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> str | tuple[str, ...]:
        row = self.table[int(index)]
        values = tuple(str(row[c]).strip() for c in self.columns)
        return values[0] if len(values) == 1 else values

    def item_id(self, index: int) -> str:
        """``row N``: the row's place among the table's rows (1 is the first after a header)."""
        return f"row {self.table[int(index)][self.ROW] + 1}"


def _index_lines(path: Path) -> tuple[list[int], list[int], list[int], int]:
    """Byte ranges and line numbers (1-based) of the non-empty lines of ``path``, and the number
    of empty ones."""
    starts, ends, numbers, skipped, offset = [], [], [], 0, 0
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
                numbers.append(number)
            else:
                skipped += 1
            offset += len(line)
    return starts, ends, numbers, skipped


def _complete(*columns: list[Any]) -> list[bool]:
    return [all(v is not None and str(v).strip() for v in row) for row in zip(*columns)]
