"""The errors selfsup reports to its user, one family under :class:`SelfsupError`.

Each message says where the problem is (the recipe file and line, the plugin, the data item,
the run directory) and what to do; the CLI prints it as one ``error:`` line and exits with the
class's :attr:`~SelfsupError.exit_status`. Any other exception is a bug (in selfsup or a plugin)
and the CLI shows its traceback. Each family also derives from the built-in exception it refines,
so ``except ValueError`` around a recipe load keeps working::

    SelfsupError
    ├── RecipeError        (ValueError)    a recipe, an override, a component's parameters
    ├── PluginError        (RuntimeError)  a plugin that cannot load or registers something invalid
    ├── DataError          (ValueError)    data that cannot be read or split as asked
    └── TrainingError      (RuntimeError)  a run that cannot go on: divergence, a stop, its directory
"""

from __future__ import annotations


class SelfsupError(Exception):
    """An error in what the user gave selfsup, not in selfsup itself."""

    exit_status = 2
    """What ``selfsup`` exits with: 2 for bad input, 1 for a run that failed, 75 for a stop."""


class RecipeError(SelfsupError, ValueError):
    """A recipe is malformed or names components that cannot work; the message names where."""


class PluginError(SelfsupError, RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


class DataError(SelfsupError, ValueError):
    """Data that cannot be read, or split as the recipe asks."""


class TrainingError(SelfsupError, RuntimeError):
    """A run that cannot go on; its last good checkpoint is kept."""

    exit_status = 1


INTERRUPTED = 75
"""Exit status after a stop on SIGTERM or Ctrl-C that wrote a checkpoint (EX_TEMPFAIL: resume later)."""


class TrainingInterrupted(TrainingError):
    """A stop was requested (SIGTERM, Ctrl-C): the current step finished and a checkpoint was written."""

    exit_status = INTERRUPTED

    def __init__(self, message: str, signal_number: int | None) -> None:
        super().__init__(message)
        self.signal_number = signal_number
