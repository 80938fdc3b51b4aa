"""Registers the image components; declared as the ``image`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import RunContext, hookimpl
from toolkit.hookspecs import Register

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.byol import BYOL
from selfsup_image.datasources import ImageFolder, ImageNpz, JpegNpz
from selfsup_image.dino import DINO, DINOHead, dino_before_optimizer_step
from selfsup_image.encoders import ResNet18, ResNet34, ResNet50
from selfsup_image.instdisc import InstDisc
from selfsup_image.mae import MAE
from selfsup_image.moco import MoCo
from selfsup_image.mocov3 import MoCoV3
from selfsup_image.simclr import NTXent
from selfsup_image.simsiam import SimSiam
from selfsup_image.supcon import SupCon
from selfsup_image.swav import SwAV, swav_before_optimizer_step
from selfsup_image.timm_encoders import TimmEncoder


@hookimpl
def register_augmentations(register: Register) -> None:
    register("simclr", SimCLRAugmentation)


@hookimpl
def register_encoders(register: Register) -> None:
    register("resnet18", ResNet18)
    register("resnet34", ResNet34)
    register("resnet50", ResNet50)
    register("timm", TimmEncoder)


@hookimpl
def register_objectives(register: Register) -> None:
    register("nt-xent", NTXent)
    register("moco", MoCo)
    register("moco-v3", MoCoV3)
    register("byol", BYOL)
    register("simsiam", SimSiam)
    register("supcon", SupCon)
    register("instdisc", InstDisc)
    register("dino", DINO)
    register("swav", SwAV)
    register("mae", MAE)


@hookimpl
def register_projectors(register: Register) -> None:
    register("dino-head", DINOHead)


@hookimpl
def on_before_optimizer_step(run: RunContext, step: int) -> None:
    """DINO's frozen last layer and weight-decay schedule, SwAV's frozen prototypes; each acts only
    on runs with its own projector or objective."""
    dino_before_optimizer_step(run, step)
    swav_before_optimizer_step(run, step)


@hookimpl
def register_datasources(register: Register) -> None:
    register("image-npz", ImageNpz)
    register("image-jpeg-npz", JpegNpz)
    register("image-folder", ImageFolder)
