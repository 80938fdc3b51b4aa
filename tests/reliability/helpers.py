"""Runs for the reliability tests: a trainer from a recipe, a CLI run, a plugin that signals its own process.

``kill_at`` and ``assert_same_state`` come from ``test_engine`` (shared with the other resume tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_engine import assert_same_state, kill_at  # noqa: F401 (re-exported for the reliability tests)
from toolkit.engine import Trainer
from toolkit.plugins import Plugins
from toolkit.recipe import load_and_resolve

QUIET = open(os.devnull, "w")


def make_trainer(recipe: Path, plugins: Plugins, run_dir: Path, *overrides: str) -> Trainer:
    resolved = load_and_resolve(recipe, ["trainer.log_every=100", *overrides], plugins)
    return Trainer.from_recipe(resolved, plugins, run_dir, log=QUIET)


SIGNALLING_PLUGIN = '''
import os, signal
from toolkit import hookimpl

@hookimpl
def on_step_end(run, step, metrics):
    if step == int(os.environ["SEND_AT_STEP"]):
        for _ in range(int(os.environ.get("SEND_TIMES", "1"))):
            os.kill(os.getpid(), getattr(signal, os.environ["SEND_SIGNAL"]))
'''


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=600)
