"""Temporal views of a video: two frames (or clips) a random interval apart, each spatially
augmented by a nested image augmentation (SimCLR's crop and colour pipeline by default)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selfsup_video.sampling import TemporalSampler
from selfsup_video.videos import Video
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Augmentation
from toolkit.limits import NonNegative, NonNegativeFloat, Positive


@declare(lambda p: Contract(consumes={"video"}, produces={"image"} if p.get("clip_length") is None else {"clip"},
                            views=2 if p.get("tcn_margin") is None else 3))
class TemporalAugmentation(Augmentation):
    """Views of one :class:`~selfsup_video.videos.Video` at two times (CVRL, Qian et al. 2021,
    "Spatiotemporal Contrastive Video Representation Learning", sec. 3.3).

    The :class:`~selfsup_video.sampling.TemporalSampler` picks the start frames ``t1``, ``t2``
    (interval ``d = t2 - t1 ~ P(d) ∝ (D + 1 - d)^power``, ``D = min(max_interval, n - s)`` for a
    video of ``n`` frames and clips spanning ``s`` frames); only the frames of the views are
    decoded, uint8 ``(T, C, H, W)`` per view (``T = clip_length``, 1 for frame views). Each view
    is then spatially augmented by ``frames``, a nested augmentation block: any registered image
    augmentation making one view per call (``n_views: 1``, per item: not ``batched``), by
    default SimCLR's random resized crop, flip, colour jitter, grayscale and blur at 112 px
    (CVRL's spatial augmentation). Views of an item are augmented independently.

    - ``clip_length: null``: views are frames, ``frames(x[0])[0]``, float ``(C, S, S)`` for a
      ``frames`` view size ``S``.
    - ``clip_length: L``: views are clips of ``L`` frames ``frame_step`` apart, float
      ``(C, L, S, S)`` (torchvision's video layout). ``consistent: true`` draws the spatial
      augmentation once per clip (CVRL's temporally consistent augmentation):
      ``frames(x)[0].transpose(0, 1)`` on the whole ``(L, C, H, W)`` clip, which needs a
      ``frames`` that treats leading dimensions as a batch sharing one draw (torchvision v2
      does, so ``simclr`` does). ``false`` draws it for every frame, stacked on dimension 1.
    - ``tcn_margin: M`` adds a third view: a frame (clip) of the same video at least ``M``
      frames from the first view, uniformly among those (TCN's negatives, Sermanet et al.
      2018), for the ``temporal-contrast`` objective's ``tcn_weight`` term. ``M`` must exceed
      ``max_interval``, so that the negative always lies farther than any positive.

    The evaluation twin is ``frames.eval_transform``: a frame ``(C, H, W)`` gives ``(C, S, S)``,
    a clip ``(T, C, H, W)`` gives ``(C, T, S, S)`` (one call on the clip, transposed) and a whole
    video its middle frame (or middle clip).
    """

    def __init__(
        self,
        frames: Augmentation = {"name": "simclr", "size": 112, "n_views": 1},
        clip_length: Positive | None = None,
        frame_step: Positive = 1,
        max_interval: NonNegative = 30,
        min_interval: NonNegative = 1,
        power: NonNegativeFloat = 1.0,
        consistent: bool = True,
        tcn_margin: Positive | None = None,
    ) -> None:
        if frames.n_views != 1:
            raise ValueError(f"augmentation.frames.n_views must be 1: the temporal augmentation asks its frame "
                             f"augmentation for one spatial view of each time, but {type(frames).__name__} makes "
                             f"{frames.n_views}; set augmentation.frames.n_views: 1 (and no extra crops: "
                             f"simclr's local_crops: 0)")
        if frames.batched:
            raise ValueError(f"augmentation.frames ({type(frames).__name__}) augments whole batches on the training "
                             f"device, but the temporal augmentation augments each view as it decodes it; set it "
                             f"to augment per item (simclr: augmentation.frames.device: cpu)")
        if tcn_margin is not None and tcn_margin <= max_interval:
            raise ValueError(f"augmentation.tcn_margin ({tcn_margin}) must exceed augmentation.max_interval "
                             f"({max_interval}): a far negative must lie farther from the anchor than any positive")
        self.frames = frames
        self.sampler = TemporalSampler(max_interval, min_interval, power, clip_length or 1, frame_step)
        self.clip_length, self.consistent, self.tcn_margin = clip_length, consistent, tcn_margin
        self.n_views = 2 if tcn_margin is None else 3

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
        view = self.frames.eval_transform(item)
        return view if item.dim() == 3 else view.transpose(0, 1)

    def _augment(self, clip: Tensor) -> Tensor:
        """uint8 ``(T, C, H, W)`` -> float ``(C, S, S)`` (frame views) or ``(C, T, S, S)``."""
        if self.clip_length is None:
            return self.frames(clip[0])[0]
        if self.consistent:
            return self.frames(clip)[0].transpose(0, 1)
        return torch.stack([self.frames(frame)[0] for frame in clip], dim=1)


def _video(item: Any) -> Video:
    if not isinstance(item, Video):
        raise TypeError(f"augmentation temporal makes views of whole videos, got {type(item).__name__}; train with "
                        f"data.unit: video (unit: frame and unit: clip are for evaluation)")
    return item
