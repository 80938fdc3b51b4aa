"""Registers VICReg and Barlow Twins and this package's recipes; the ``vicreg`` entry point of
selfsup-vicreg (``[project.entry-points.selfsup]`` in its ``pyproject.toml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from toolkit import hookimpl
from toolkit.hookspecs import Register

from selfsup_vicreg.objectives import BarlowTwins, VICReg

RECIPES = Path(__file__).resolve().parent / "recipes"
"""The recipe files shipped as package data (``selfsup recipes`` lists them)."""


@hookimpl
def register_objectives(register: Register) -> None:
    register("vicreg", VICReg)
    register("barlow-twins", BarlowTwins)


@hookimpl
def register_recipes(register: Callable[[str], None]) -> None:
    for path in sorted(RECIPES.glob("*.yaml")):
        register(str(path))
