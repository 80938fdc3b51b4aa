"""Temporal views of a video: two frames (or clips) a random interval apart, each spatially
augmented with SimCLR's crop and colour pipeline (reused from the image plugin)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selfsup_image.augmentations import crop_and_colour, resize_and_centre_crop
from selfsup_video.sampling import TemporalSampler
from selfsup_video.videos import Video
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Augmentation


@declare(lambda p: Contract(consumes={"video"}, produces={"image"} if p.get("clip_length") is None else {"clip"},
                            views=2 if p.get("tcn_margin") is None else 3))
class TemporalAugmentation(Augmentation):
    """Views of one :class:`~selfsup_video.videos.Video` at two times (CVRL, Qian et al. 2021).

    The :class:`~selfsup_video.sampling.TemporalSampler` picks the start frames ``t1``, ``t2``
    (interval ``d ~ P(d)`` favouring short intervals, at most ``max_interval`` frames); only the
    frames of the views are decoded. Each view then gets SimCLR's random resized crop, flip,
    colour jitter, grayscale and blur (:func:`selfsup_image.augmentations.crop_and_colour`).

    - ``clip_length: null``: views are frames, float ``(C, size, size)``.
    - ``clip_length: L``: views are clips of ``L`` frames ``frame_step`` apart, float
      ``(C, L, size, size)`` (torchvision's video layout). ``consistent: true`` draws the spatial
      augmentation once per clip (CVRL's temporally consistent augmentation); ``false`` draws
      it for every frame.
    - ``tcn_margin: M`` adds a third view: a frame (clip) of the same video at least ``M``
      frames from the first view, uniformly among those (TCN's negatives, Sermanet et al.
      2018), for the ``temporal-contrast`` objective's ``tcn_weight`` term. ``M`` must exceed
      ``max_interval``, so that the negative always lies farther than any positive.

    The evaluation twin resizes the short side to ``size / eval_crop_fraction`` and centre-crops
    ``size``: a frame ``(C, H, W)`` gives ``(C, size, size)``, a clip ``(T, C, H, W)`` gives
    ``(C, T, size, size)`` and a whole video its middle frame (or middle clip).
    """

    def __init__(
        self,
        size: int = 112,
        clip_length: int | None = None,
        frame_step: int = 1,
        max_interval: int = 30,
        min_interval: int = 1,
        power: float = 1.0,
        consistent: bool = True,
        tcn_margin: int | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        strength: float = 1.0,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        flip_prob: float = 0.5,
        eval_crop_fraction: float = 0.875,
    ) -> None:
        if not 0 < eval_crop_fraction <= 1:
            raise ValueError(f"augmentation.eval_crop_fraction must be in (0, 1], got {eval_crop_fraction}")
        if tcn_margin is not None and tcn_margin <= max_interval:
            raise ValueError(f"augmentation.tcn_margin ({tcn_margin}) must exceed augmentation.max_interval "
                             f"({max_interval}): a far negative must lie farther from the anchor than any positive")
        self.sampler = TemporalSampler(max_interval, min_interval, power, clip_length or 1, frame_step)
        self.clip_length, self.consistent, self.tcn_margin = clip_length, consistent, tcn_margin
        self.n_views = 2 if tcn_margin is None else 3
        self.train = crop_and_colour(size, scale, strength=strength, jitter_prob=jitter_prob,
                                     grayscale_prob=grayscale_prob, blur_prob=blur_prob, flip_prob=flip_prob)
        self.eval = resize_and_centre_crop(size, eval_crop_fraction)

    def __call__(self, item: Any) -> list[Tensor]:
        video = _video(item)
        n = video.num_frames
        first, second = self.sampler.sample(n)
        starts = [first, second]
        if self.tcn_margin is not None:
            starts.append(self.sampler.far_start(n, first, self.tcn_margin))
        indices = [self.sampler.clip(start, n) for start in starts]
        frames = video.frames([i for clip in indices for i in clip])
        return [self._augment(clip) for clip in frames.split(self.sampler.clip_length)]

    def eval_transform(self, item: Any) -> Tensor:
        if isinstance(item, Video):
            middle = max(item.num_frames - self.sampler.span, 0) // 2
            item = item.frames(self.sampler.clip(middle, item.num_frames))
            item = item if self.clip_length is not None else item[0]
        if not isinstance(item, Tensor) or item.dim() not in (3, 4):
            raise TypeError(f"augmentation temporal evaluates frames (C, H, W), clips (T, C, H, W) or videos, got "
                            f"{type(item).__name__} {tuple(getattr(item, 'shape', ()))}")
        return self.eval(item) if item.dim() == 3 else self.eval(item).transpose(0, 1)

    def _augment(self, clip: Tensor) -> Tensor:
        """uint8 ``(T, C, H, W)`` -> float ``(C, size, size)`` (frame views) or ``(C, T, size, size)``."""
        if self.clip_length is None:
            return self.train(clip[0])
        if self.consistent:
            return self.train(clip).transpose(0, 1)
        return torch.stack([self.train(frame) for frame in clip], dim=1)


def _video(item: Any) -> Video:
    if not isinstance(item, Video):
        raise TypeError(f"augmentation temporal makes views of whole videos, got {type(item).__name__}; train with "
                        f"data.unit: video (unit: frame and unit: clip are for evaluation)")
    return item
