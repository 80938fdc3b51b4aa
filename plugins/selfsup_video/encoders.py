"""Video encoders: any registered image encoder applied to every frame, and torchvision's
R(2+1)D-18 and R3D-18 clip networks. Every one returns one vector per sample, ``(N, D)``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from toolkit.compatibility import Contract, declare
from toolkit.limits import Positive
from toolkit.weights import load_weights, read_state_dict
from toolkit.interfaces import Encoder

if TYPE_CHECKING:  # torchvision is imported when an encoder is built, not when the plugin registers
    from torchvision.models.video.resnet import VideoResNet

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
"""The normalisation of torchvision's Kinetics-400 video models."""


@declare(Contract(consumes={"image", "clip"}, produces={"tensor"}))
class FrameEncoder(Encoder):
    """An image encoder applied to every frame: ``frames`` is a nested encoder block, any
    registered image encoder (``{name: resnet18, stem: cifar, width: 16}``, or just ``resnet18``),
    with its own normalisation and ``weights``.

    ``x: (N, C, H, W) -> (N, D)`` for frames, ``frames(x)``; ``x: (N, C, T, H, W) -> (N, D)`` for
    clips, the mean over time of the per-frame features, ``h = 1/T sum_t frames(x[:, :, t])``
    (the average consensus of Temporal Segment Networks, Wang et al. 2016; all ``N * T`` frames
    go through one forward pass). ``D`` is the frame encoder's ``output_dim`` (512 for ResNet-18
    at width 64). The frame encoder's parameters are this encoder's, under ``frames.``.
    """

    def __init__(self, frames: Encoder = {"name": "resnet18"}) -> None:
        super().__init__()
        if frames.output_kind != "vector":
            raise ValueError(f"encoder.frames must give one vector per frame, but {type(frames).__name__} gives "
                             f"{frames.output_kind}s; use an image encoder such as resnet18")
        self.frames = frames
        self.output_dim = frames.output_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self.frames(x)
        if x.dim() != 5:
            raise ValueError(f"frame-encoder expects frames (N, C, H, W) or clips (N, C, T, H, W), "
                             f"got {tuple(x.shape)}")
        n, c, t, h, w = x.shape
        features = self.frames(x.transpose(1, 2).reshape(n * t, c, h, w))
        return features.view(n, t, -1).mean(dim=1)


@declare(Contract(consumes={"clip"}, produces={"tensor"}))
class ClipResNet(Encoder):
    """torchvision's video ResNet (``VideoResNet``) without its classifier: ``x (N, 3, T, H, W) -> (N, D)``.

    ``x`` is float in ``[0, 1]``; the encoder normalises with the Kinetics-400 mean and std
    itself. Random initialisation by default (nothing is ever downloaded); ``weights`` loads a
    local torchvision state dict of the same architecture (e.g. Kinetics-400 weights saved
    beforehand with ``torch.save(r2plus1d_18(weights="DEFAULT").state_dict(), path)``); the
    classifier is ignored. ``width`` is the first stage's channel count (64 in the paper, where
    ``D = 512``; ``D = 8 * width``): smaller widths make CPU and test models.
    """

    conv: str
    """The name of the torchvision ``VideoResNet`` convolution builder."""
    stem: Callable[[int], nn.Module]
    name: str

    def __init__(self, width: Positive = 64, weights: Path | None = None) -> None:
        super().__init__()
        self.net = _video_resnet(self.conv, self.stem, width)
        self.net.fc = nn.Identity()
        self.output_dim = 8 * width
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        if weights is not None:
            state = read_state_dict(weights, f"a torchvision {self.name} state dict")
            load_weights(self.net, state, weights, self.name, drop=("fc.",),
                         hint=f"use a torchvision {self.name} state dict of the same width")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"{self.name} encodes clips (N, 3, T, H, W), got {tuple(x.shape)}; set "
                             f"augmentation.clip_length and evaluate with data unit: clip")
        return self.net((x - self.mean) / self.std)


class R2Plus1D18(ClipResNet):
    """R(2+1)D-18 (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action
    Recognition"): every 3-D convolution factorised into a spatial ``1 x 3 x 3`` and a temporal
    ``3 x 1 x 1`` one. 31.3 M parameters at width 64."""

    conv = "Conv2Plus1D"
    name = "r2plus1d-18"

    @staticmethod
    def stem(width: int) -> nn.Module:
        if width == 64:
            from torchvision.models.video.resnet import R2Plus1dStem

            return R2Plus1dStem()
        middle = max(1, 45 * width // 64)  # torchvision's 45 channels, scaled
        return nn.Sequential(
            nn.Conv3d(3, middle, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(middle), nn.ReLU(inplace=True),
            nn.Conv3d(middle, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
        )


class R3D18(ClipResNet):
    """R3D-18 (Tran et al. 2018; Hara et al. 2018): ResNet-18 with full ``3 x 3 x 3`` convolutions.
    33.2 M parameters at width 64."""

    conv = "Conv3DSimple"
    name = "r3d-18"

    @staticmethod
    def stem(width: int) -> nn.Module:
        if width == 64:
            from torchvision.models.video.resnet import BasicStem

            return BasicStem()
        return nn.Sequential(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
        )


def _video_resnet(conv_name: str, stem: Callable[[int], nn.Module], width: int) -> VideoResNet:
    """torchvision's 18-layer ``VideoResNet`` with stage widths ``width * (1, 2, 4, 8)``."""
    from torchvision.models.video.resnet import BasicBlock, VideoResNet
    from torchvision.models.video import resnet

    conv = getattr(resnet, conv_name)
    net = VideoResNet(BasicBlock, [conv] * 4, [2, 2, 2, 2], lambda: stem(64))
    if width == 64:
        return net
    net.inplanes = width
    net.stem = stem(width)
    for i, stride in enumerate((1, 2, 2, 2)):
        setattr(net, f"layer{i + 1}", net._make_layer(BasicBlock, conv, width * 2 ** i, 2, stride=stride))
    for module in net.modules():  # torchvision's own initialisation, for the rebuilt layers
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return net
