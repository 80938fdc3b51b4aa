"""Where in a video the views come from: CVRL's temporal interval sampling and TCN's far negatives."""

from __future__ import annotations

import torch
from torch import Tensor


class TemporalSampler:
    """Start frames of two clips of one video, a random interval ``d`` apart.

    Qian et al. 2021, "Spatiotemporal Contrastive Video Representation Learning" (CVRL), sec. 3.3:
    draw the interval from a distribution over ``[0, T]`` that favours short intervals, place the
    first clip uniformly, and the second ``d`` frames after it. Here, for a video of ``n`` frames
    and clips spanning ``s = (clip_length - 1) * frame_step + 1`` frames::

        D = min(max_interval, n - s)            # the largest interval at which both clips fit
        d in {lo, ..., D}, lo = min(min_interval, D)
        P(d) = (D + 1 - d)^power / sum_{k=lo}^{D} (D + 1 - k)^power
        t1 ~ U{0, ..., n - s - d},  t2 = t1 + d

    ``power = 1`` is CVRL's best, the linearly decreasing ``P(t) ∝ -t + c``; ``power = 0`` is
    uniform; larger powers favour short intervals more. Frames are views with
    ``clip_length = 1``.

    Bounds: both clips always lie inside the video. A video shorter than one clip (``n < s``)
    gives ``d = 0`` and clips that repeat its last frame (:meth:`clip`); a single-frame video
    gives both views from frame 0 (their spatial augmentations still differ). Every draw uses
    torch's default generator, which the engine seeds per item, so views are reproducible.
    """

    def __init__(self, max_interval: int, min_interval: int = 1, power: float = 1.0, clip_length: int = 1,
                 frame_step: int = 1) -> None:
        if max_interval < 0 or min_interval < 0 or min_interval > max_interval:
            raise ValueError(f"augmentation.min_interval ({min_interval}) and max_interval ({max_interval}) must "
                             f"satisfy 0 <= min_interval <= max_interval")
        if clip_length < 1 or frame_step < 1:
            raise ValueError(f"augmentation.clip_length ({clip_length}) and frame_step ({frame_step}) must be >= 1")
        if power < 0:
            raise ValueError(f"augmentation.power must be >= 0 (0 is uniform), got {power}")
        self.max_interval, self.min_interval, self.power = max_interval, min_interval, power
        self.clip_length, self.frame_step = clip_length, frame_step

    @property
    def span(self) -> int:
        """Frames one clip covers, first to last: ``(clip_length - 1) * frame_step + 1``."""
        return (self.clip_length - 1) * self.frame_step + 1

    def interval_probabilities(self, num_frames: int) -> Tensor:
        """``P(d)`` for ``d = 0..D``: float64 ``(D + 1,)``, zero below ``lo``."""
        room = max(num_frames - self.span, 0)
        top = min(self.max_interval, room)
        low = min(self.min_interval, top)
        d = torch.arange(top + 1, dtype=torch.float64)
        weights = torch.where(d >= low, (top + 1 - d) ** self.power, torch.zeros_like(d))
        return weights / weights.sum()

    def sample(self, num_frames: int) -> tuple[int, int]:
        """Start frames ``(t1, t2)``, ``t2 - t1 = d ~ P(d)``."""
        d = int(torch.multinomial(self.interval_probabilities(num_frames), 1).item())
        room = max(num_frames - self.span, 0)
        t1 = int(torch.randint(0, room - d + 1, ()).item())
        return t1, t1 + d

    def far_start(self, num_frames: int, anchor: int, margin: int) -> int:
        """A clip start at least ``margin`` frames from ``anchor``, uniform among those (TCN's
        negatives, Sermanet et al. 2018); the start farthest from ``anchor`` if none is that far."""
        room = max(num_frames - self.span, 0)
        before = max(anchor - margin + 1, 0)  # starts 0 .. anchor - margin
        after = max(room - (anchor + margin) + 1, 0)  # starts anchor + margin .. room
        if before + after == 0:
            return 0 if anchor >= room - anchor else room
        pick = int(torch.randint(0, before + after, ()).item())
        return pick if pick < before else anchor + margin + pick - before

    def clip(self, start: int, num_frames: int) -> list[int]:
        """The ``clip_length`` frame indices from ``start``, ``frame_step`` apart (the last frame
        repeats when the video is too short)."""
        return [min(start + k * self.frame_step, num_frames - 1) for k in range(self.clip_length)]
