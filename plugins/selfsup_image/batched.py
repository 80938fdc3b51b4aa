"""SimCLR's random image transforms applied to a whole batch at once, with per-item parameters.

The ``device: batch`` path of :class:`~selfsup_image.augmentations.SimCLRAugmentation`: one
:class:`BatchedTransform` per view turns uint8 images ``(N, C, H, W)`` on the training device into
float32 views ``(N, C, size, size)`` in ``[0, 1]``, vectorised over the batch. Item ``n``'s
parameters are functions of its uniforms ``u[n]: (DRAWS,)`` (drawn from its position-keyed seed by
:func:`toolkit.data.seeded_uniforms`) with the distributions of the per-item torchvision pipeline
(SimCLR, Chen et al. 2020, appendix A; solarize from BYOL, Grill et al. 2020):

- crop: area fraction ``a ~ U(scale)``, aspect ratio ``r ~ exp(U(log 3/4, log 4/3))``,
  ``w = round(sqrt(a H W r))``, ``h = round(sqrt(a H W / r))``; the first of 10 tries that fits,
  else the central crop of the clamped aspect ratio; top-left corner uniform over the positions
  that fit; resized to ``size x size`` bilinearly (half-pixel centres) with ``roi_align``, which
  averages ``ceil(h / size) x ceil(w / size)`` samples per output pixel when it shrinks;
- horizontal flip with ``flip_prob``;
- colour jitter with ``jitter_prob``: brightness, contrast and saturation factors
  ``~ U(max(0, 1 - 0.8 s), 1 + 0.8 s)``, hue shift ``~ U(-0.2 s, 0.2 s)``, in a random order per
  item (torchvision's ``ColorJitter``);
- grayscale with ``grayscale_prob`` (ITU-R 601-2 luma in all channels);
- Gaussian blur with ``blur_prob``, ``sigma ~ U(0.1, 2.0)``, one separable kernel per item
  (a grouped convolution), reflect padding;
- solarize with ``solarize_prob``: ``x >= 0.5 -> 1 - x``.

Unlike the per-item path, which works on uint8, values are not rounded to 8 bits between steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

DRAWS = 36
"""Uniforms per item and view: 10 crop tries x (area, ratio), top, left, flip, jitter (apply,
4 factors, 4 order keys), grayscale, blur (apply, sigma), solarize."""

_TRIES = 10
_AREA, _RATIO, _TOP, _LEFT, _FLIP = slice(0, 10), slice(10, 20), 20, 21, 22
_JITTER, _FACTORS, _ORDER = 23, slice(24, 28), slice(28, 32)
_GRAY, _BLUR, _SIGMA, _SOLARIZE = 32, 33, 34, 35
BRIGHTNESS, CONTRAST, SATURATION, HUE, NONE = range(5)
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class ViewSettings:
    """What one view's random transform does (the augmentation's recipe parameters)."""

    size: int
    scale: tuple[float, float]
    strength: float
    jitter_prob: float
    grayscale_prob: float
    blur_prob: float
    flip_prob: float
    solarize_prob: float
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    sigma: tuple[float, float] = (0.1, 2.0)


class ViewParams(NamedTuple):
    """Every item's parameters for one view; ``N`` items."""

    box: Tensor
    """``(N, 4)`` float: top, left, height, width of the crop, in pixels."""
    flip: Tensor
    """``(N,)`` bool."""
    jitter: Tensor
    """``(N,)`` bool: colour jitter applied."""
    factors: Tensor
    """``(N, 4)``: brightness, contrast, saturation factors and the hue shift."""
    order: Tensor
    """``(N, 4)`` int64: the jitter operations (``BRIGHTNESS`` .. ``HUE``) in the order applied."""
    gray: Tensor
    """``(N,)`` bool."""
    sigma: Tensor
    """``(N,)`` float: the blur's standard deviation, 0 where the item is not blurred."""
    solarize: Tensor
    """``(N,)`` bool."""


class BatchedTransform:
    """One view of every item of a batch: ``(images (N, C, H, W), u (N, DRAWS)) -> (N, C, size, size)``."""

    def __init__(self, settings: ViewSettings) -> None:
        self.settings = settings
        self.blur_kernel = blur_kernel_size(settings.size)

    def __call__(self, images: Tensor, u: Tensor) -> Tensor:
        return self.transform(images, self.make_params(u, images.shape[-2], images.shape[-1]))

    def make_params(self, u: Tensor, height: int, width: int) -> ViewParams:
        """Parameters for ``N`` items of ``height x width`` from their uniforms ``u: (N, DRAWS)``."""
        s = self.settings
        jitter = u[:, _JITTER] < s.jitter_prob
        low = torch.tensor([max(0.0, 1 - 0.8 * s.strength)] * 3 + [-0.2 * s.strength], device=u.device)
        high = torch.tensor([1 + 0.8 * s.strength] * 3 + [0.2 * s.strength], device=u.device)
        blur = u[:, _BLUR] < s.blur_prob
        sigma = s.sigma[0] + (s.sigma[1] - s.sigma[0]) * u[:, _SIGMA]
        return ViewParams(
            box=crop_boxes(u, height, width, s.scale, s.ratio),
            flip=u[:, _FLIP] < s.flip_prob,
            jitter=jitter,
            factors=low + (high - low) * u[:, _FACTORS],
            order=u[:, _ORDER].argsort(dim=1),
            gray=u[:, _GRAY] < s.grayscale_prob,
            sigma=torch.where(blur, sigma, torch.zeros_like(sigma)),
            solarize=u[:, _SOLARIZE] < s.solarize_prob,
        )

    def transform(self, images: Tensor, params: ViewParams) -> Tensor:
        """Apply ``params`` to uint8 (or float in ``[0, 1]``) ``images: (N, C, H, W)``."""
        s = self.settings
        x = images.to(torch.float32)
        if images.dtype == torch.uint8:
            x = x / 255
        x = resized_crops(x, params.box, s.size)
        x = torch.where(_per_item(params.flip), x.flip(-1), x)
        if s.jitter_prob > 0 and s.strength > 0:
            x = colour_jitter(x, params.jitter, params.factors, params.order)
        if s.grayscale_prob > 0:
            x = torch.where(_per_item(params.gray), grayscale(x).expand_as(x), x)
        if s.blur_prob > 0:
            x = torch.where(_per_item(params.sigma > 0), gaussian_blur(x, params.sigma, self.blur_kernel), x)
        if s.solarize_prob > 0:
            x = torch.where(_per_item(params.solarize) & (x >= 0.5), 1 - x, x)
        return x.clamp(0.0, 1.0)  # interpolation and blur weights sum to 1 only up to rounding


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: 10% of the view's side, odd, at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def crop_boxes(u: Tensor, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float]) -> Tensor:
    """Random resized crop boxes ``(N, 4)`` (top, left, h, w) as torchvision draws them, all tries at once."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, _AREA])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * u[:, _RATIO])
    w, h = torch.sqrt(target * aspect).round(), torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first try that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    any_fit = fits.any(dim=1)
    fallback_h, fallback_w = _central_crop(height, width, ratio)
    h = torch.where(any_fit, h, torch.full_like(h, fallback_h))
    w = torch.where(any_fit, w, torch.full_like(w, fallback_w))
    top = torch.where(any_fit, (u[:, _TOP] * (height - h + 1)).floor(), torch.full_like(h, (height - fallback_h) // 2))
    left = torch.where(any_fit, (u[:, _LEFT] * (width - w + 1)).floor(), torch.full_like(w, (width - fallback_w) // 2))
    return torch.stack([top, left, h, w], dim=1)


def resized_crops(x: Tensor, box: Tensor, size: int) -> Tensor:
    """Crop ``box[n]`` (top, left, h, w) of each ``x[n]: (C, H, W)`` and resize it to ``size x size``."""
    from torchvision.ops import roi_align

    top, left, h, w = box.unbind(1)
    index = torch.arange(len(x), device=x.device, dtype=x.dtype)
    rois = torch.stack([index, left, top, left + w, top + h], dim=1).to(x.dtype)
    return roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def colour_jitter(x: Tensor, apply: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """torchvision's ``ColorJitter`` per item, in each item's ``order``, where ``apply``.

    Brightness, contrast and saturation are blends ``f x + (1 - f) t`` (``t`` = 0, the mean luma,
    the luma), so one blend per step serves every item whatever its operation; hue runs once for
    all. An item's operations before its hue shift go through three blend steps, those after it
    through three more (``NONE`` pads, with ``f = 1``), so there is no branch on the data.
    """
    n = len(x)
    hue_at = (order == HUE).float().argmax(dim=1, keepdim=True)  # (N, 1)
    steps = torch.arange(3, device=x.device).expand(n, 3)
    none = torch.full_like(order[:, :3], NONE)
    before = torch.where((steps < hue_at) & apply[:, None], order[:, :3], none)
    after_at = hue_at + 1 + steps
    after = torch.where((after_at <= 3) & apply[:, None], order.gather(1, after_at.clamp(max=3)), none)
    for step in range(3):
        x = _blend(x, before[:, step], factors)
    if x.shape[1] == 3:
        x = torch.where(_per_item(apply), adjust_hue(x, factors[:, HUE]), x)
    for step in range(3):
        x = _blend(x, after[:, step], factors)
    return x


def grayscale(x: Tensor) -> Tensor:
    """Luma ``(N, 1, H, W)`` of RGB ``x`` (a single channel stays as it is)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of RGB ``x: (N, 3, H, W)`` by ``shift[n]`` turns, keeping value and saturation.

    torchvision's RGB -> HSV hue in sixths of a turn, ``h`` (``(g - b) / c``, ``(b - r) / c + 2`` or
    ``(r - g) / c + 4`` for the largest channel ``v``, chroma ``c = v - min``), then the closed-form
    HSV -> RGB: channel ``(r, g, b)`` is ``v - c clamp(min(k, 4 - k), 0, 1)``, ``k = (o + h) mod 6``,
    ``o = (5, 3, 1)`` (``v s = c``, so the saturation itself is not needed).
    """
    r, g, b = x.unbind(1)
    value = x.amax(dim=1)
    chroma = value - x.amin(dim=1)
    divisor = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sixths = torch.where(value == r, (g - b) / divisor,
                         torch.where(value == g, (b - r) / divisor + 2.0, (r - g) / divisor + 4.0))
    sixths = torch.remainder(sixths + 6.0 * shift[:, None, None], 6.0)
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0], device=x.device)[None, :, None, None] + sixths[:, None], 6.0)
    return value[:, None] - chroma[:, None] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each ``x[n]`` with a ``kernel_size`` Gaussian of ``sigma[n]`` (reflect padding); items
    with ``sigma == 0`` come out unchanged up to rounding (callers keep them exactly)."""
    n, c, height, width = x.shape
    half = kernel_size // 2
    t = torch.linspace(-half, half, kernel_size, device=x.device)
    pdf = torch.exp(-0.5 * (t / sigma.clamp_min(1e-6)[:, None]) ** 2)
    kernel = (pdf / pdf.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N C, k)
    y = F.pad(x.reshape(1, n * c, height, width), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, height, width)


def _blend(x: Tensor, operation: Tensor, factors: Tensor) -> Tensor:
    """One jitter step: item ``n`` gets ``operation[n]`` (``BRIGHTNESS``, ``CONTRAST``,
    ``SATURATION`` or ``NONE``) with its factor; ``NONE`` (``f = 1``) leaves it exactly as it is."""
    op = operation[:, None, None, None]
    factor = factors.gather(1, operation.clamp(max=SATURATION)[:, None])[:, :, None, None]
    factor = torch.where(op == NONE, torch.ones_like(factor), factor)
    luma = grayscale(x)
    target = (op == SATURATION) * luma + (op == CONTRAST) * luma.mean(dim=(1, 2, 3), keepdim=True)
    return (factor * x + (1 - factor) * target).clamp(0.0, 1.0)


def _central_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback when no try fits: the whole image, its aspect ratio clamped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width


def _per_item(mask: Tensor) -> Tensor:
    """``(N,)`` -> ``(N, 1, 1, 1)``, to select whole images."""
    return mask[:, None, None, None]
