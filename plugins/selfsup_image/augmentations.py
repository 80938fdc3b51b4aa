"""SimCLR's image augmentation, with multi-crop and its evaluation twin: per item on
torchvision.transforms.v2 (``device: cpu``) or per batch on the training device (``device: batch``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
import torch
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit.data import seeded_uniforms
from toolkit.limits import Fraction, FractionRange, NonNegative, NonNegativeFloat, Positive, Probability
from toolkit.interfaces import Augmentation, Batch

from selfsup_image.batched import DRAWS, BatchedTransform, ViewSettings, blur_kernel_size

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

    ``solarize_prob`` (BYOL, Grill et al. 2020) inverts pixels ``>= 0.5`` with that probability
    (0, the default, leaves the pipeline as it was).

    Where the work runs, ``device``:

    - ``cpu`` (the default): ``__call__`` makes every view of an item with torchvision in the
      data-loader workers, its random numbers from the item's seeded generator.
    - ``batch``: ``__call__`` only hands the uint8 item on, once per view (``source_size``, if
      set, first resizes its short side and centre-crops a square of that side, so items of
      different sizes can be stacked; otherwise items must share one shape, as CIFAR's do), and
      :meth:`on_device` makes the views of the whole batch on the training device
      (:mod:`selfsup_image.batched`: the same transforms and parameter distributions, vectorised,
      each item's parameters drawn from its position-keyed seed ``Batch.seeds``, so resume stays
      exact). It also takes a stack of items, so a source that holds them as one tensor
      (``data.on_device: true``) is batched without a per-item loop. Crops come from the stacked
      source image, so prefer ``source_size`` at least the view size.
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
        solarize_prob: Probability = 0.0,
        device: Literal["cpu", "batch"] = "cpu",
        source_size: Positive | None = None,
    ) -> None:
        if source_size is not None and device != "batch":
            raise ValueError("augmentation.source_size sizes the items stacked for augmentation.device: batch; "
                             "remove it or set augmentation.device: batch")
        self.global_views, self.local_crops = n_views, local_crops
        self.n_views = n_views + local_crops
        self.device, self.batched = device, device == "batch"
        colour = dict(strength=strength, jitter_prob=jitter_prob, grayscale_prob=grayscale_prob,
                      blur_prob=blur_prob, flip_prob=flip_prob, solarize_prob=solarize_prob)
        if self.batched:
            self.views = ([BatchedTransform(ViewSettings(size, scale, **colour))] * n_views
                          + [BatchedTransform(ViewSettings(local_size, local_scale, **colour))] * local_crops)
            self.stack_size = resize_and_centre_crop(source_size, 1.0, dtype=None) if source_size else None
        else:
            self.train = crop_and_colour(size, scale, **colour)
            self.local = crop_and_colour(local_size, local_scale, **colour)
        self.eval = resize_and_centre_crop(size, eval_crop_fraction)
        self._shape: tuple[int, ...] | None = None

    def __call__(self, item: Tensor) -> list[Tensor]:
        """``n_views`` views of a uint8 item ``(C, H, W)``; with ``device: batch``, the item (or a
        stack ``(N, C, H, W)``) itself, brought to ``source_size``, once per view."""
        if self.batched:
            return [self._stackable(item)] * self.n_views
        return ([self.train(item) for _ in range(self.global_views)]
                + [self.local(item) for _ in range(self.local_crops)])

    def eval_transform(self, item: ImageLike) -> Tensor:
        """``item``: anything :func:`as_image` reads -> float ``(C, size, size)``."""
        return self.eval(as_image(item))

    def on_device(self, batch: Batch) -> Batch:
        """With ``device: batch``: view ``v`` of item ``n`` from uint8 ``batch.views[v]: (N, C, H, W)``
        and ``seeded_uniforms(batch.seeds, v, DRAWS)[n]``, float32 ``(N, C, size, size)`` in ``[0, 1]``."""
        if not self.batched:
            return batch
        if batch.seeds is None:
            raise ValueError("augmentation.device: batch draws each item's random parameters from its seed, and "
                             "this batch carries none (Batch.seeds); make batches with toolkit.data.ViewBatches")
        views = [transform(images, seeded_uniforms(batch.seeds, v, DRAWS))
                 for v, (transform, images) in enumerate(zip(self.views, batch.views))]
        return dataclasses.replace(batch, views=views)

    def _stackable(self, item: Tensor) -> Tensor:
        if self.stack_size is not None:
            return self.stack_size(item)
        if self._shape is None:
            self._shape = tuple(item.shape[-3:])
        if tuple(item.shape[-3:]) != self._shape:
            raise ValueError(f"augmentation.device: batch stacks items of one shape, but got {tuple(item.shape[-3:])} "
                             f"after {self._shape}; set augmentation.source_size (e.g. the view size) to resize "
                             f"and centre-crop every item to one square")
        return item


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
                    grayscale_prob: float, blur_prob: float, flip_prob: float,
                    solarize_prob: float = 0.0) -> v2.Compose:
    """SimCLR's random transform as one ``v2.Compose``: uint8 ``(..., C, H, W) -> float (..., C, size, size)``.

    Leading dimensions share one draw of every random parameter (torchvision v2 treats them as a
    batch), so a clip ``(T, C, H, W)`` gets the same crop and colours in every frame.
    """
    from torchvision.transforms import v2

    s = strength
    solarize = [v2.RandomSolarize(0.5, p=solarize_prob)] if solarize_prob > 0 else []  # none: no random draw
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(flip_prob),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=jitter_prob),
        v2.RandomGrayscale(grayscale_prob),
        v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur_prob),
        v2.ToDtype(torch.float32, scale=True),
        *solarize,
    ])


def resize_and_centre_crop(size: int, eval_crop_fraction: float,
                           dtype: torch.dtype | None = torch.float32) -> v2.Compose:
    """The evaluation twin: short side to ``size / eval_crop_fraction``, centre ``size x size``, float in
    ``[0, 1]`` (``dtype=None`` keeps the item's dtype)."""
    from torchvision.transforms import v2

    to_dtype = [v2.ToDtype(dtype, scale=True)] if dtype is not None else []
    return v2.Compose([
        v2.Resize(round(size / eval_crop_fraction), antialias=True),
        v2.CenterCrop(size),
        *to_dtype,
    ])
