"""A reader for the UCR/UEA ``.ts`` format (the sktime/aeon archive format).

::

    # comments
    @problemName BasicMotions
    @univariate false
    @equalLength true
    @classLabel true Standing Running Walking Badminton
    @data
    0.1,0.3,...:0.2,0.1,...:Standing      <- one series: dimensions separated by ':', label last

Missing values are ``?`` (read as NaN); series and dimensions of different lengths are
right-padded with NaN to the longest. With ``@classLabel false`` the lines carry no label (the
data is unlabelled). Timestamped series (``@timeStamps true``) are not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """``(x (N, C, L) float32 NaN-padded, y (N,) int64, class_names)`` of a ``.ts`` file;
    ``y`` and ``class_names`` are ``None`` for ``@classLabel false``.

    Labels index ``class_names`` in the ``@classLabel`` header order. Errors name the file
    and line.
    """
    class_names: list[str] | None = None
    labelled = True
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                words = line.split()
                key = words[0].lower()
                if key == "@timestamps" and len(words) > 1 and words[1].lower() == "true":
                    raise ValueError(f"{path}:{number}: timestamped .ts series are not supported")
                if key == "@classlabel":
                    labelled = len(words) > 1 and words[1].lower() == "true"
                    class_names = words[2:] if labelled and len(words) > 2 else None
                in_data = key == "@data"
                continue
            *dimensions, label = line.split(":") if labelled else [*line.split(":"), ""]
            if not dimensions:
                raise ValueError(f"{path}:{number}: expected values and a class label separated by ':'")
            try:
                rows.append([_values(d) for d in dimensions])
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            if class_names is not None and label.strip() not in class_names:
                raise ValueError(f"{path}:{number}: class {label.strip()!r} is not in @classLabel {class_names}")
            if rows and len(rows[-1]) != len(rows[0]):
                raise ValueError(f"{path}:{number}: {len(rows[-1])} dimensions, the first series has {len(rows[0])}")
            labels.append(label.strip())
    if not rows:
        raise ValueError(f"{path}: no series after @data")
    longest = max(len(d) for row in rows for d in row)
    x = np.full((len(rows), len(rows[0]), longest), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for c, values in enumerate(row):
            x[i, c, : len(values)] = values
    if not labelled:
        return x, None, None
    class_names = class_names or sorted(set(labels))
    y = np.array([class_names.index(label) for label in labels], dtype=np.int64)
    return x, y, class_names


def _values(text: str) -> np.ndarray:
    items = [v.strip() for v in text.split(",") if v.strip()]
    try:
        return np.array([np.nan if v == "?" else float(v) for v in items], dtype=np.float32)
    except ValueError:
        raise ValueError(f"cannot read {text[:40]!r} as comma-separated numbers") from None
