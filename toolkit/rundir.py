"""The run directory as a durable record: one writer at a time, whole records, honest history.

A run directory holds ``recipe.yaml`` (the resolved recipe, rewritten atomically), ``metrics.jsonl``
(one JSON record per line), ``history.jsonl`` (one record per start, resume, interruption and
end: when, where, at which step, and what changed) and ``checkpoints/``.

- :meth:`RunDirectory.lock` takes an advisory ``flock`` on ``.lock``; a second process on the
  same directory is refused with the holder's pid, host and command. The kernel releases the lock
  when its holder dies, so a crashed run never leaves a stale lock.
- Records are appended with one ``write`` each and flushed; checkpoints remember the size of
  ``metrics.jsonl`` when they were written, and :meth:`RunDirectory.truncate_metrics` cuts it back to
  that size on resume (through a temporary file and a rename), so nothing logged after the
  checkpoint is logged twice, and a kill during the cut loses nothing.
- Disk-full, read-only and permission errors become :class:`RunDirectoryError`: one line naming
  the path and what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any, Iterator

from toolkit.errors import TrainingError

LOCK = ".lock"
METRICS = "metrics.jsonl"
HISTORY = "history.jsonl"
RECIPE = "recipe.yaml"


class RunDirectoryError(TrainingError):
    """The run directory cannot be used as asked: locked by another run, or a write failed."""


class RunDirectory:
    """The files of one run, written by the main process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        """Hold the directory's advisory lock until :meth:`unlock` or process exit."""
        with writing(self.path / LOCK):
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirectoryError(f"{self.path} is in use by {holder}; wait for that run to finish or choose "
                                    f"another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()} "
                     f"({' '.join(['selfsup', *sys.argv[1:]])[:200]})\n")
        handle.flush()
        self._lock = handle
        for stale in (self.path / "checkpoints").glob(".*.tmp"):  # left by writes that a kill interrupted
            stale.unlink(missing_ok=True)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    def write_recipe(self, text: str) -> None:
        write_atomic(self.path / RECIPE, text)

    def append_metrics(self, record: dict[str, Any]) -> None:
        _append_line(self.path / METRICS, json.dumps(record))

    def metrics_size(self) -> int:
        """The byte length of ``metrics.jsonl``: what a checkpoint remembers."""
        path = self.path / METRICS
        return path.stat().st_size if path.exists() else 0

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every whole record of ``metrics.jsonl`` (:meth:`read_history` for ``history.jsonl``);
        a torn last line (a write cut by a full disk or a kill) is dropped with a warning."""
        return _read_records(self.path / METRICS)

    def read_history(self) -> list[dict[str, Any]]:
        """Every whole event of ``history.jsonl``, read as :meth:`read_metrics` reads its file."""
        return _read_records(self.path / HISTORY)

    def truncate_metrics(self, size: int | None, step: int) -> None:
        """Cut ``metrics.jsonl`` back to what it held when the checkpoint being resumed was
        written: its first ``size`` bytes, or (checkpoints without a size) the records up to
        ``step``. Written to a temporary file and renamed, so a kill leaves the old file whole."""
        path = self.path / METRICS
        if not path.exists():
            return
        if size is not None and path.stat().st_size >= size:
            with open(path, "rb") as handle:
                kept = handle.read(size).decode("utf-8")
        else:
            kept = "".join(json.dumps(r) + "\n" for r in self.read_metrics() if r.get("step", 0) <= step)
        write_atomic(path, kept)

    def record(self, event: str, **details: Any) -> None:
        """Append one event (``start``, ``resume``, ``interrupted``, ``diverged``, ``finished``) to
        ``history.jsonl``."""
        _append_line(self.path / HISTORY, json.dumps({"event": event, "time": _now(), "host": socket.gethostname(),
                                                      "pid": os.getpid(), **details}))


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a ``.jsonl`` file, one per line; a torn last line is dropped with a
    warning, a bad line before it is an error naming it."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise RunDirectoryError(f"{path}:{number}: not a JSON record; the file was edited or damaged "
                                        f"(remove that line to continue)") from None
            print(f"warning: {path}:{number}: dropped a torn last record (a write was cut short)", file=sys.stderr)
    return records


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write to ``path`` into a one-line :class:`RunDirectoryError` saying what to do."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            advice = f"the disk is full; free space on the file system of {path.parent} and resume the run"
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = "the folder is not writable; fix its permissions or choose another --run-dir"
        elif error.errno == errno.EDQUOT:
            advice = "the disk quota is exceeded; free space and resume the run"
        else:
            advice = "check that the folder exists and its file system is mounted and healthy, then resume the run"
        raise RunDirectoryError(f"cannot write {path}: {error.strerror or error}; {advice}") from None


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that it is always either the old or the new content."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing(path):
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def _append_line(path: Path, line: str) -> None:
    data = (line + "\n").encode("utf-8")
    with writing(path):
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, data)
            if written != len(data):  # a short write: the disk filled up mid-record
                raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            os.close(descriptor)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
