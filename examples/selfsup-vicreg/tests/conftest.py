"""Shared fixtures: the selfsup plugins with this package registered, and the sample data."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.plugins import Plugins, discover

import selfsup_vicreg.plugin

SAMPLE_DATA = Path(__file__).resolve().parents[3] / "data" / "cifar10_mini_jpeg.npz"
"""The CIFAR-10 sample bundled with the selfsup repository (256 train and test JPEGs)."""

needs_sample_data = pytest.mark.skipif(
    not SAMPLE_DATA.is_file(), reason=f"{SAMPLE_DATA} is not present (run the tests from a selfsup checkout)")


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    """Every installed plugin; ``vicreg`` comes through its entry point when the package is
    installed and is added by hand when it is only importable (a source checkout on PYTHONPATH)."""
    loaded = discover()
    if "vicreg" not in loaded.infos:
        loaded.add("vicreg", selfsup_vicreg.plugin)
    return loaded
