"""Registers the cross-modal (pairs) components; declared as the ``pairs`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import hookimpl
from toolkit.hookspecs import Register

from selfsup_pairs.augmentations import PairAugmentation
from selfsup_pairs.datasources import Flickr8k, ImageTextCsv
from selfsup_pairs.encoders import TwoTowerEncoder
from selfsup_pairs.evaluation import Retrieval, ZeroShot
from selfsup_pairs.objectives import CLIP, SigLIP
from selfsup_pairs.optim import adamw_towers


@hookimpl
def register_datasources(register: Register) -> None:
    register("flickr8k", Flickr8k)
    register("image-text-csv", ImageTextCsv)


@hookimpl
def register_augmentations(register: Register) -> None:
    register("pairs", PairAugmentation)


@hookimpl
def register_encoders(register: Register) -> None:
    register("two-tower", TwoTowerEncoder)


@hookimpl
def register_objectives(register: Register) -> None:
    register("clip", CLIP)
    register("siglip", SigLIP)


@hookimpl
def register_optimizers(register: Register) -> None:
    register("adamw-towers", adamw_towers)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("retrieval", Retrieval)
    register("zero-shot", ZeroShot)
