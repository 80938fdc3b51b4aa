"""Shared fixtures: the repository's paths, the default plugins, and a tiny recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.plugins import Plugins, default_plugins

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
SHARED_DATA = ROOT.parent / "shared" / "data"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is not present (it is in CI, beside the checkout)"
)


@pytest.fixture
def plugins() -> Plugins:
    return default_plugins()


@pytest.fixture
def tiny_recipe() -> Path:
    """A SimCLR recipe that trains 8 steps on 256 bundled CIFAR-10 images in about a second."""
    return RECIPES / "tiny.yaml"
