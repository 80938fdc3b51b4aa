"""ResNet encoders from torchvision, with a CIFAR stem and an adjustable width."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from toolkit.compatibility import Contract, declare
from toolkit.limits import Positive
from toolkit.weights import load_weights, read_state_dict
from toolkit.interfaces import Encoder

if TYPE_CHECKING:  # torchvision is imported when an encoder is built, not when the plugin registers
    from torchvision.models.resnet import ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYOUTS = {18: ("BasicBlock", [2, 2, 2, 2]), 34: ("BasicBlock", [3, 4, 6, 3]), 50: ("Bottleneck", [3, 4, 6, 3])}

@declare(Contract(consumes={"image"}, produces={"tensor"}))
class ResNetEncoder(Encoder):
    """torchvision's ResNet (He et al. 2016) without its classifier: ``x (N, C, H, W) -> h (N, D)``.

    ``x`` is float in ``[0, 1]``; the encoder normalises with ``mean``/``std`` itself.
    ``stem: cifar`` replaces the 7x7/2 convolution and max-pool by a 3x3/1 convolution (for
    32x32 inputs, as in SimCLR's CIFAR experiments). ``width`` is the first stage's channel
    count (64 in the paper; 8-16 makes tiny test models); ``D = 8 * width * expansion``
    (512 for ResNet-18, 2048 for ResNet-50 at width 64). ``weights`` loads a local torchvision
    state dict (for example ImageNet weights downloaded beforehand); the classifier is ignored.
    """

    depth: int = 18

    def __init__(
        self,
        stem: Literal["imagenet", "cifar"] = "imagenet",
        width: Positive = 64,
        in_channels: Positive = 3,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        weights: Path | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"encoder.mean and encoder.std need {in_channels} values (one per input channel)")
        from torchvision.models import resnet

        block_name, layers = _LAYOUTS[self.depth]
        block = getattr(resnet, block_name)
        net = resnet.ResNet(block, layers)
        if width != 64 or stem == "cifar" or in_channels != 3:
            _rebuild(net, block, layers, width, stem, in_channels)
        net.fc = nn.Identity()
        self.net = net
        self.output_dim = 8 * width * block.expansion
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        if weights is not None:
            state = read_state_dict(weights, "a torchvision ResNet state dict")
            load_weights(self.net, state, weights, "ResNet", drop=("fc.",),
                         hint="use a torchvision ResNet state dict of the same depth, width and stem")

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


class ResNet18(ResNetEncoder):
    depth = 18


class ResNet34(ResNetEncoder):
    depth = 34


class ResNet50(ResNetEncoder):
    depth = 50


def _rebuild(net: ResNet, block: type, layers: list[int], width: int, stem: str, in_channels: int) -> None:
    if stem == "cifar":
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.inplanes = width
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, width * 2, layers[1], stride=2)
    net.layer3 = net._make_layer(block, width * 4, layers[2], stride=2)
    net.layer4 = net._make_layer(block, width * 8, layers[3], stride=2)
    for module in net.modules():  # torchvision's own initialisation, for the rebuilt layers
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
