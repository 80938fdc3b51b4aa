"""The installed environment itself: every built-in plugin loads in a fresh process.

A dependency that installs but does not import (a torchaudio build whose extension does not match
the installed torch, say) makes its plugin vanish from `selfsup plugins` while everything else
keeps working. These tests turn that into a red suite naming the plugin and the error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import ROOT


def _declared_builtin_plugins() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(project["project"]["entry-points"]["selfsup"])


def _plugins_report() -> list[dict]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SELFSUP_")}
    completed = subprocess.run([sys.executable, "-m", "toolkit", "plugins", "--all", "--json"], capture_output=True,
                               text=True, env=environment, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_every_builtin_plugin_loads_in_the_installed_environment() -> None:
    report = {info["name"]: info for info in _plugins_report() if info["builtin"]}
    failed = {name: info["error"] for name, info in report.items() if info["error"]}
    assert not failed, "built-in plugins failed to load: " + "; ".join(f"{n}: {e}" for n, e in failed.items())
    missing = _declared_builtin_plugins() - set(report)
    assert not missing, f"built-in plugins declared in pyproject.toml but not installed: {sorted(missing)}"


def _modules_loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys; print(' '.join(sorted(m for m in sys.modules if '.' not in m)))"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return set(completed.stdout.split())


def test_the_help_text_imports_no_torch() -> None:
    loaded = _modules_loaded_after("from toolkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
                                   "    pass")
    assert "torch" not in loaded


HEAVY_LIBRARIES = {"torchvision", "transformers", "datasets", "av", "sentence_transformers", "matplotlib", "sklearn",
                   "wandb", "mlflow"}
"""Imported when a component that needs one is built. (torchaudio is light and imported when the
sequence plugin loads, so a torchaudio build that does not match torch fails that plugin's load.)"""


def test_registering_the_builtin_plugins_imports_no_heavy_library() -> None:
    """Listing plugins and validating recipes import only torch: each heavy library is imported
    when a component that needs it is built."""
    loaded = _modules_loaded_after("from toolkit.plugins import discover\ndiscover()")
    assert not loaded & HEAVY_LIBRARIES
    assert "torch" in loaded  # the interfaces are torch modules: the probe did load the plugins


def test_validating_a_recipe_imports_no_heavy_library() -> None:
    loaded = _modules_loaded_after(f"from toolkit.cli import main\nmain(['recipe', 'validate', "
                                   f"{str(ROOT / 'recipes' / 'quickstart.yaml')!r}])")
    assert not loaded & HEAVY_LIBRARIES


def test_the_libraries_that_components_import_on_demand_import() -> None:
    """What registration no longer imports is checked here instead, so a broken install of one
    still turns the suite red, naming the library."""
    code = ("import importlib, sys\nfailed = []\nfor name in ['torchvision.io', 'torchvision.models', "
            "'torchvision.transforms.v2', 'transformers', 'datasets', 'av']:\n    try:\n"
            "        importlib.import_module(name)\n    except Exception as error:\n"
            "        failed.append(f'{name}: {type(error).__name__}: {error}')\nprint('; '.join(failed))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0 and not completed.stdout.strip(), completed.stdout + completed.stderr
