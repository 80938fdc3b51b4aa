"""Registers the text components; declared as the ``text`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import hookimpl
from toolkit.hookspecs import Register

from selfsup_text.augmentations import SimCSEViews
from selfsup_text.datasources import text_source
from selfsup_text.encoders import HFTransformerEncoder
from selfsup_text.objectives import SimCSE
from selfsup_text.projectors import SimCSEMLP
from selfsup_text.sts import STSEvaluator


@hookimpl
def register_augmentations(register: Register) -> None:
    register("simcse", SimCSEViews)


@hookimpl
def register_encoders(register: Register) -> None:
    register("hf-transformer", HFTransformerEncoder)


@hookimpl
def register_projectors(register: Register) -> None:
    register("simcse-mlp", SimCSEMLP)


@hookimpl
def register_objectives(register: Register) -> None:
    register("simcse", SimCSE)


@hookimpl
def register_datasources(register: Register) -> None:
    register("text", text_source)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("sts", STSEvaluator)
