"""SimCLR's image augmentation on torchvision.transforms.v2, with multi-crop and its evaluation twin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit.limits import Fraction, FractionRange, NonNegative, NonNegativeFloat, Positive, Probability
from toolkit.interfaces import Augmentation

if TYPE_CHECKING:  # torchvision is imported when an augmentation is built, not when the plugin registers
    from PIL import Image as PILImage
    from torchvision.transforms import v2

ImageLike = Union[Tensor, np.ndarray, str, Path, "PILImage.Image"]
"""What an evaluation transform takes: a uint8 ``(C, H, W)`` tensor, a numpy array, a path or a PIL image."""


@declare(lambda p: Contract(consumes={"image"}, produces={"image"},
                            views=p.get("n_views", 2) + p.get("local_crops", 0)))
class SimCLRAugmentation(Augmentation):
    """Random resized crop, horizontal flip, colour jitter, grayscale and Gaussian blur
    (Chen et al. 2020, appendix A), applied independently to make ``n_views`` views.

    Items are uint8 images ``(C, H, W)``; views are float32 ``(C, size, size)`` in ``[0, 1]``
    (normalisation belongs to the encoder). Colour jitter is ``(0.8 s, 0.8 s, 0.8 s, 0.2 s)``
    for ``strength = s``, applied with ``jitter_prob``. The blur kernel is 10% of ``size``.
    CIFAR recipes use ``scale: [0.2, 1.0]`` and ``blur_prob: 0``.

    The evaluation transform resizes the short side to ``size / eval_crop_fraction`` and
    centre-crops ``size`` (``eval_crop_fraction: 1.0`` resizes only).

    Multi-crop (Caron et al. 2020, SwAV): ``local_crops > 0`` adds that many smaller views
    ``(C, local_size, local_size)`` cropped with ``local_scale`` (SwAV: 96 px, ``(0.05, 0.14)``)
    after the ``n_views`` global ones, with the same colour transforms. Views are ordered global
    first, so objectives find the global views at positions ``0 .. n_views - 1``.
    """

    def __init__(
        self,
        size: Positive = 224,
        scale: FractionRange = (0.08, 1.0),
        strength: NonNegativeFloat = 1.0,
        jitter_prob: Probability = 0.8,
        grayscale_prob: Probability = 0.2,
        blur_prob: Probability = 0.5,
        flip_prob: Probability = 0.5,
        n_views: Positive = 2,
        eval_crop_fraction: Fraction = 0.875,
        local_crops: NonNegative = 0,
        local_size: Positive = 96,
        local_scale: FractionRange = (0.05, 0.14),
    ) -> None:
        self.global_views, self.local_crops = n_views, local_crops
        self.n_views = n_views + local_crops
        colour = dict(strength=strength, jitter_prob=jitter_prob, grayscale_prob=grayscale_prob,
                      blur_prob=blur_prob, flip_prob=flip_prob)
        self.train = crop_and_colour(size, scale, **colour)
        self.local = crop_and_colour(local_size, local_scale, **colour)
        self.eval = resize_and_centre_crop(size, eval_crop_fraction)

    def __call__(self, item: Tensor) -> list[Tensor]:
        return ([self.train(item) for _ in range(self.global_views)]
                + [self.local(item) for _ in range(self.local_crops)])

    def eval_transform(self, item: ImageLike) -> Tensor:
        """``item``: anything :func:`as_image` reads -> float ``(C, size, size)``."""
        return self.eval(as_image(item))


def as_image(item: ImageLike) -> Tensor:
    """uint8 RGB ``(C, H, W)`` from a uint8 tensor ``(C, H, W)`` (as it is), a PIL image, a numpy
    array ``(H, W)`` / ``(H, W, C)`` (uint8, or float in ``[0, 1]``; an alpha channel is
    dropped, grey is repeated), or the path of an image file."""
    if isinstance(item, Tensor):
        return item
    if isinstance(item, (str, Path)):
        from torchvision.io import ImageReadMode, decode_image

        return decode_image(str(item), mode=ImageReadMode.RGB)
    from PIL import Image

    if isinstance(item, Image.Image):
        item = np.asarray(item.convert("RGB"))
    if not isinstance(item, np.ndarray) or item.ndim not in (2, 3):
        raise TypeError(f"expected an image: a PIL image, an (H, W[, C]) numpy array, a file path or a uint8 "
                        f"(C, H, W) tensor, got {type(item).__name__} {getattr(item, 'shape', '')}")
    pixels = item if item.ndim == 3 else item[..., None]
    if np.issubdtype(pixels.dtype, np.floating):
        pixels = (pixels * 255).round().clip(0, 255)
    pixels = pixels.astype(np.uint8)[..., :3]
    if pixels.shape[2] == 1:
        pixels = pixels.repeat(3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def crop_and_colour(size: int, scale: tuple[float, float], strength: float, jitter_prob: float,
                    grayscale_prob: float, blur_prob: float, flip_prob: float) -> v2.Compose:
    """SimCLR's random transform as one ``v2.Compose``: uint8 ``(..., C, H, W) -> float (..., C, size, size)``.

    Leading dimensions share one draw of every random parameter (torchvision v2 treats them as a
    batch), so a clip ``(T, C, H, W)`` gets the same crop and colours in every frame.
    """
    from torchvision.transforms import v2

    s = strength
    blur_kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(flip_prob),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=jitter_prob),
        v2.RandomGrayscale(grayscale_prob),
        v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=blur_prob),
        v2.ToDtype(torch.float32, scale=True),
    ])


def resize_and_centre_crop(size: int, eval_crop_fraction: float) -> v2.Compose:
    """The evaluation twin: short side to ``size / eval_crop_fraction``, centre ``size x size``, float in ``[0, 1]``."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(round(size / eval_crop_fraction), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
    ])
