"""Registers the image components; declared as the ``image`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import hookimpl
from toolkit.hookspecs import Register

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.byol import BYOL
from selfsup_image.datasources import ImageFolder, ImageNpz, JpegNpz
from selfsup_image.encoders import ResNet18, ResNet34, ResNet50
from selfsup_image.instdisc import InstDisc
from selfsup_image.moco import MoCo
from selfsup_image.simclr import NTXent
from selfsup_image.simsiam import SimSiam
from selfsup_image.supcon import SupCon


@hookimpl
def register_augmentations(register: Register) -> None:
    register("simclr", SimCLRAugmentation)


@hookimpl
def register_encoders(register: Register) -> None:
    register("resnet18", ResNet18)
    register("resnet34", ResNet34)
    register("resnet50", ResNet50)


@hookimpl
def register_objectives(register: Register) -> None:
    register("nt-xent", NTXent)
    register("moco", MoCo)
    register("byol", BYOL)
    register("simsiam", SimSiam)
    register("supcon", SupCon)
    register("instdisc", InstDisc)


@hookimpl
def register_datasources(register: Register) -> None:
    register("image-npz", ImageNpz)
    register("image-jpeg-npz", JpegNpz)
    register("image-folder", ImageFolder)
