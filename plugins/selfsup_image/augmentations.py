"""SimCLR's image augmentation on torchvision.transforms.v2, with its evaluation twin."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

from toolkit.interfaces import Augmentation


class SimCLRAugmentation(Augmentation):
    """Random resized crop, horizontal flip, colour jitter, grayscale and Gaussian blur
    (Chen et al. 2020, appendix A), applied independently to make ``n_views`` views.

    Items are uint8 images ``(C, H, W)``; views are float32 ``(C, size, size)`` in ``[0, 1]``
    (normalisation belongs to the encoder). Colour jitter is ``(0.8 s, 0.8 s, 0.8 s, 0.2 s)``
    for ``strength = s``, applied with ``jitter_prob``. The blur kernel is 10% of ``size``.
    CIFAR recipes use ``scale: [0.2, 1.0]`` and ``blur_prob: 0``.

    The evaluation transform resizes the short side to ``size / eval_crop_fraction`` and
    centre-crops ``size`` (``eval_crop_fraction: 1.0`` resizes only).
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        strength: float = 1.0,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        flip_prob: float = 0.5,
        n_views: int = 2,
        eval_crop_fraction: float = 0.875,
    ) -> None:
        if n_views < 1:
            raise ValueError(f"augmentation.n_views must be at least 1, got {n_views}")
        if not 0 < eval_crop_fraction <= 1:
            raise ValueError(f"augmentation.eval_crop_fraction must be in (0, 1], got {eval_crop_fraction}")
        self.n_views = n_views
        s = strength
        blur_kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        self.train = v2.Compose([
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(flip_prob),
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=jitter_prob),
            v2.RandomGrayscale(grayscale_prob),
            v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=blur_prob),
            v2.ToDtype(torch.float32, scale=True),
        ])
        self.eval = v2.Compose([
            v2.Resize(round(size / eval_crop_fraction), antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
        ])

    def __call__(self, item: Tensor) -> list[Tensor]:
        return [self.train(item) for _ in range(self.n_views)]

    def eval_transform(self, item: Tensor) -> Tensor:
        return self.eval(item)
