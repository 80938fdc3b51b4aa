"""A third-party plugin, pip-installed as its own distribution, works like a built-in one.

``tests/third_party_plugin`` is the ``selfsup-dummy`` distribution (entry point ``dummy``,
objective ``dummy-cosine``). It is installed into a private folder that only the ``selfsup``
subprocesses see through ``PYTHONPATH``; nothing is installed into the environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from toolkit.plugins import discover

pytestmark = pytest.mark.slow

PACKAGE = Path(__file__).resolve().parents[1] / "third_party_plugin"
TINY_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"

Selfsup = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding selfsup-dummy as ``pip install --target`` left it."""
    root = tmp_path_factory.mktemp("selfsup-dummy")
    # Built from a copy so that setuptools' build/ and *.egg-info never land in the repository.
    source = shutil.copytree(PACKAGE, root / "source",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(target), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        if importlib.util.find_spec("setuptools") is None:
            pytest.skip("setuptools is not installed, so pip cannot build tests/third_party_plugin "
                        "(pip install setuptools, or the dev extra)")
        pytest.fail(f"pip could not install {PACKAGE}:\n{result.stdout}\n{result.stderr}")
    return target


@pytest.fixture(scope="module")
def selfsup(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Selfsup:
    """``selfsup(*args)`` runs ``python -m toolkit ARGS`` with selfsup-dummy installed."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("SELFSUP_STRICT_PLUGINS", "SELFSUP_DISABLE_PLUGINS")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    cwd = tmp_path_factory.mktemp("cwd")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True,
                              env=environment, cwd=cwd)

    return run


@pytest.fixture(scope="module")
def listing(selfsup: Selfsup) -> dict[str, dict]:
    """``selfsup plugins --json`` with selfsup-dummy installed, by plugin name."""
    result = selfsup("plugins", "--json", "--all")
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe with its objective replaced by ``dummy-cosine``."""
    path = tmp_path_factory.mktemp("recipe") / "tiny-dummy.yaml"
    path.write_text(f"extends: {json.dumps(str(TINY_RECIPE))}\nname: tiny-dummy\n"
                    f"objective: {{name: dummy-cosine}}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(selfsup: Selfsup, recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of two training steps with ``dummy-cosine``."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    result = selfsup("train", str(recipe), "schedule.max_steps=2", "eval.evaluators=[]",
                     "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_an_installed_plugin_is_listed_with_its_distribution_and_components(listing: dict[str, dict]) -> None:
    dummy = listing["dummy"]

    assert (dummy["module"], dummy["distribution"], dummy["version"]) == (
        "selfsup_dummy.plugin", "selfsup-dummy", "0.0.1")
    assert (dummy["builtin"], dummy["error"]) == (False, None)
    assert dummy["components"] == {"objective": ["dummy-cosine"]}


def test_an_installed_plugin_leaves_the_builtin_plugins_unchanged(
    listing: dict[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SELFSUP_DISABLE_PLUGINS", raising=False)
    without_dummy = {name: json.loads(json.dumps(vars(info))) for name, info in discover().infos.items()}

    assert {name: listing[name] for name in without_dummy} == without_dummy


def test_a_recipe_can_name_the_installed_objective(selfsup: Selfsup, recipe: Path) -> None:
    result = selfsup("recipe", "validate", str(recipe))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{recipe}: valid (tiny-dummy)"


def test_training_with_the_installed_objective_exports_an_encoder(trained: Path) -> None:
    assert (trained / "encoder" / "encoder.json").is_file()


def test_training_with_the_installed_objective_logs_its_negative_cosine_as_loss(trained: Path) -> None:
    steps = [json.loads(line) for line in (trained / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]

    assert [step["step"] for step in steps] == [1, 2]
    assert all(step["loss"] == pytest.approx(-step["cosine"]) for step in steps)
