"""Progress of long work (training steps, feature extraction, embedding): a live bar or plain lines.

On a terminal, or in a Jupyter notebook, :class:`Progress` is a tqdm bar with the rate and the
ETA (``tqdm.auto``: a widget in Jupyter when ipywidgets is installed). Where the stream is not a
terminal (a log file, a CI job, a pipe), a bar's carriage returns would only clutter the log: it
prints one plain line at most every ``every_s`` seconds instead (short work prints nothing), and
callers that have their own line format (the training loop's ``step N/M | ...`` lines) print it
through :meth:`Progress.write`, which keeps a bar intact.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def interactive(stream: TextIO) -> bool:
    """Whether ``stream`` shows a live bar: a terminal, or the output of a Jupyter notebook."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or in_notebook()


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (whose output streams are not terminals)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """``total`` units of work (``unit``: ``"step"``, ``"item"``), started at ``initial``.

    ``bar`` forces the choice between a tqdm bar (``True``) and plain lines (``False``);
    by default it follows :func:`interactive`. ``leave=False`` removes the bar when it closes
    (evaluation inside a training run). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, total: int, description: str, unit: str = "item", stream: TextIO | None = None,
                 initial: int = 0, every_s: float = 30.0, bar: bool | None = None, leave: bool = True) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.every_s = initial, every_s
        self._started = self._last_line = time.perf_counter()
        self._initial = initial
        self._bar: Any = None
        self._postfix: dict[str, Any] = {}
        if interactive(self.stream) if bar is None else bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=description, unit=unit, file=self.stream,
                             dynamic_ncols=True, leave=leave)

    @property
    def is_bar(self) -> bool:
        return self._bar is not None

    def update(self, count: int = 1, **postfix: Any) -> None:
        """``count`` more units done; ``postfix`` values are shown after a bar, each until it is given
        again (plain lines ignore them)."""
        self.done += count
        if self._bar is not None:
            if postfix:
                self._postfix.update(postfix)
                self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.update(count)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.every_s and self.done < self.total:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """``description: 2560/8000 items (1234 items/s, ETA 0m04s)``."""
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rate = (self.done - self._initial) / elapsed
        eta = duration((self.total - self.done) / rate) if rate > 0 else "?"
        return f"{self.description}: {self.done}/{self.total} {self.unit}s ({rate:.4g} {self.unit}s/s, ETA {eta})"

    def write(self, text: str) -> None:
        """Print ``text`` on its own line, above the bar when there is one."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def duration(seconds: float) -> str:
    """``1h02m`` from an hour on, else ``4m05s``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
