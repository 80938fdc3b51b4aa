"""CPC views: one random fixed-length window per item, with light signal perturbations.

CPC needs a single view (the prediction task is inside the sequence); ``n_views`` makes more,
independently drawn, for objectives that compare views (BYOL, SimCLR on audio). Items are float tensors
``(C, L)`` whose trailing all-NaN columns are padding. Items shorter than the training window are
right-padded with NaN, which the CPC encoders read as zeros and leave out of their statistics.
The evaluation twin is deterministic: the item itself, centre-cropped to ``eval_length`` when
that is set (to bound memory on long recordings); the encoder's collate pads batches with NaN
and pools over valid frames only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Augmentation
from toolkit.limits import Positive


@declare(lambda p: Contract(consumes={"sequence"}, produces={"sequence"}, views=p.get("n_views", 1)))
class CPCAudioAugmentation(Augmentation):
    """A random ``window`` of samples (20480 = 1.28 s at 16 kHz in CPC_audio), then optionally

    - gain: ``x * 10^(g / 20)``, ``g ~ U(-gain_db, gain_db)``;
    - additive white noise with probability ``noise_prob`` at ``noise_snr_db`` dB below the
      window's RMS;
    - time masking with probability ``time_mask_prob``: a span of ``U(0, time_mask)`` samples
      set to 0.

    ``n_views`` independent windows are made of each item (1 for CPC).
    """

    def __init__(
        self,
        window: Positive = 20480,
        gain_db: float = 0.0,
        noise_snr_db: float = 30.0,
        noise_prob: float = 0.0,
        time_mask: int = 0,
        time_mask_prob: float = 0.0,
        eval_length: Positive | None = None,
        n_views: Positive = 1,
    ) -> None:
        self.window, self.gain_db, self.eval_length, self.n_views = window, gain_db, eval_length, n_views
        self.noise_snr_db, self.noise_prob = noise_snr_db, noise_prob
        self.time_mask, self.time_mask_prob = time_mask, time_mask_prob

    def __call__(self, item: Tensor) -> list[Tensor]:
        return [self._view(item) for _ in range(self.n_views)]

    def _view(self, item: Tensor) -> Tensor:
        x = random_window(item, self.window)
        if self.gain_db > 0:
            x = x * 10 ** ((torch.rand(()).item() * 2 - 1) * self.gain_db / 20)
        if self.noise_prob > 0 and torch.rand(()).item() < self.noise_prob:
            rms = torch.nan_to_num(x).square().mean().sqrt()
            x = x + torch.randn_like(x) * rms * 10 ** (-self.noise_snr_db / 20)
        if self.time_mask > 0 and torch.rand(()).item() < self.time_mask_prob:
            span = int(torch.randint(0, self.time_mask + 1, ()).item())
            start = int(torch.randint(0, max(x.shape[-1] - span, 0) + 1, ()).item())
            segment = x[:, start:start + span]
            segment.masked_fill_(~torch.isnan(segment), 0.0)  # padding stays padding
        return x

    def eval_transform(self, item: Tensor) -> Tensor:
        return center_crop(item, self.eval_length)


@declare(lambda p: Contract(consumes={"sequence"}, produces={"sequence"}, views=p.get("n_views", 1)))
class CPCSeriesAugmentation(Augmentation):
    """A random ``window`` of time steps, then per-channel scaling ``x * s_c``, ``s_c ~ N(1,
    scaling^2)``, and jitter ``x + N(0, jitter^2)`` (Um et al. 2017's series augmentations);
    ``n_views`` independent windows of each item (1 for CPC)."""

    def __init__(self, window: Positive = 128, jitter: float = 0.0, scaling: float = 0.0,
                 eval_length: Positive | None = None, n_views: Positive = 1) -> None:
        self.window, self.jitter, self.scaling, self.eval_length = window, jitter, scaling, eval_length
        self.n_views = n_views

    def __call__(self, item: Tensor) -> list[Tensor]:
        return [self._view(item) for _ in range(self.n_views)]

    def _view(self, item: Tensor) -> Tensor:
        x = random_window(item, self.window)
        if self.scaling > 0:
            x = x * (1 + self.scaling * torch.randn(x.shape[0], 1))
        if self.jitter > 0:
            x = x + self.jitter * torch.randn_like(x)
        return x

    def eval_transform(self, item: Tensor) -> Tensor:
        return center_crop(item, self.eval_length)


def random_window(item: Tensor, window: int) -> Tensor:
    """A uniformly placed ``(C, window)`` crop of the valid part of ``item: (C, L)``; shorter
    items are right-padded with NaN. Interior NaNs (missing values) become 0."""
    x = torch.nan_to_num(trim_padding(item).float(), nan=0.0)
    if x.shape[-1] < window:
        return torch.cat([x, x.new_full((x.shape[0], window - x.shape[-1]), math.nan)], dim=-1)
    start = int(torch.randint(0, x.shape[-1] - window + 1, ()).item())
    return x[:, start:start + window].clone()


def center_crop(item: Tensor, length: int | None) -> Tensor:
    """The valid part of ``item: (C, L)``, centre-cropped to ``length`` samples if longer."""
    x = torch.nan_to_num(trim_padding(item).float(), nan=0.0)
    if length is None or x.shape[-1] <= length:
        return x
    start = (x.shape[-1] - length) // 2
    return x[:, start:start + length]


def trim_padding(item: Tensor) -> Tensor:
    """``item: (C, L)`` without its trailing all-NaN columns (the UCR padding of shorter series)."""
    present = ~torch.isnan(item).all(dim=0)
    if not bool(present.any()):
        return item[:, :0]
    return item[:, : int(present.nonzero().max()) + 1]
