"""``examples/selfsup-vicreg``, the example third-party plugin package, installs on its own into a
fresh virtual environment and works with no change in the core.

The fresh environment sees the toolkit (and torch) of the environment running the tests through
a ``site.addsitedir`` line in a ``.pth`` file, instead of installing torch again; the example
package itself is pip-installed into it like any distribution (entry point, package data).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

PACKAGE = ROOT / "examples" / "selfsup-vicreg"
SAMPLE_DATA = ROOT / "data" / "cifar10_mini_jpeg.npz"
RECIPES = ["barlow-twins-cifar10.yaml", "vicreg-cifar10.yaml", "vicreg-tiny.yaml"]

Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtual environment with selfsup-vicreg pip-installed."""
    root = tmp_path_factory.mktemp("selfsup-vicreg")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages())
    (Path(venv_site) / "selfsup-base-environment.pth").write_text(lines)
    # Built from a copy so that setuptools' build/ and *.egg-info never land in the repository.
    source = shutil.copytree(PACKAGE, root / "source",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    command = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"pip could not install {PACKAGE} into a fresh environment:\n{result.stdout}\n{result.stderr}")
    return python


@pytest.fixture(scope="module")
def site_packages(venv_python: Path) -> Path:
    """Where the fresh environment installed the package."""
    return Path(subprocess.run([str(venv_python), "-c", "import selfsup_vicreg, os; "
                                "print(os.path.dirname(os.path.dirname(selfsup_vicreg.__file__)))"],
                               capture_output=True, text=True, check=True).stdout.strip())


@pytest.fixture(scope="module")
def run(venv_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``run(*args)`` runs the fresh environment's ``python ARGS``."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("SELFSUP_STRICT_PLUGINS", "SELFSUP_DISABLE_PLUGINS", "PYTHONPATH")}
    # One intra-op thread: these models are tiny, and on a loaded 2-core machine torch's default
    # thread pool oversubscribes the cores (the example's tests took 25 s instead of 4 s).
    environment.setdefault("OMP_NUM_THREADS", "1")
    cwd = tmp_path_factory.mktemp("cwd")

    def python(*args: str, cwd: Path = cwd) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv_python), *args], capture_output=True, text=True, env=environment, cwd=cwd)

    return python


@pytest.fixture(scope="module")
def trained(run: Run, site_packages: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of three steps of the installed ``vicreg-tiny.yaml``."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    recipe = site_packages / "selfsup_vicreg" / "recipes" / "vicreg-tiny.yaml"
    result = run("-m", "toolkit", "train", str(recipe), f"data.path={SAMPLE_DATA}", "schedule.max_steps=3",
                 "trainer.log_every=1", "eval.evaluators=[]", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_the_installed_example_is_listed_with_both_objectives(run: Run) -> None:
    result = run("-m", "toolkit", "plugins", "--json")

    assert result.returncode == 0, result.stderr
    vicreg = {entry["name"]: entry for entry in json.loads(result.stdout)}["vicreg"]
    assert (vicreg["distribution"], vicreg["version"], vicreg["builtin"], vicreg["error"]) == (
        "selfsup-vicreg", "0.1.0", False, None)
    assert vicreg["components"] == {"objective": ["vicreg", "barlow-twins"]}


def test_the_installed_example_ships_its_recipes_as_package_data(run: Run, site_packages: Path) -> None:
    result = run("-m", "toolkit", "recipes", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["vicreg"] == [str(site_packages / "selfsup_vicreg" / "recipes" / name) for name in RECIPES]


def test_the_tiny_recipe_of_the_installed_example_exports_an_encoder(trained: Path) -> None:
    assert (trained / "encoder" / "encoder.json").is_file()


def test_the_tiny_recipe_of_the_installed_example_logs_a_finite_loss(trained: Path) -> None:
    steps = [json.loads(line) for line in (trained / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]

    assert [step["step"] for step in steps] == [1, 2, 3]
    assert all(math.isfinite(step["loss"]) for step in steps)


def test_the_example_packages_own_tests_pass_against_the_installed_package(run: Run) -> None:
    result = run("-m", "pytest", str(PACKAGE / "tests"), "-q", "-p", "no:cacheprovider", cwd=ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout
