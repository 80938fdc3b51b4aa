"""Lazy video handles: the items of the video data sources.

A :class:`Video` knows how many frames it has and reads only the frames asked for, whether they
come from a video file (PyAV), a folder of images or a slice of a frame array. Handles are small
and picklable, so data-loader workers receive them cheaply and decode in parallel.

Timeline. The stored video has ``native_frames`` frames at ``native_fps``. With ``fps`` set, the
timeline is resampled (frame-rate control): output frame ``i`` shows native frame
``floor(i * native_fps / fps)``, and there are ``ceil(native_frames * fps / native_fps)`` output
frames. :meth:`Video.window` restricts a handle to output frames ``[start, stop)`` (the time
split); ``frames(indices)`` then counts from ``start``. ``short_side`` rescales every frame so
that its shorter side has that many pixels (resolution control; aspect ratio kept).
"""

from __future__ import annotations

import abc
import copy
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from selfsup_video.videoio import VideoIndex, read_frames


class Video(abc.ABC):
    """``num_frames`` frames at ``fps``; ``frames(indices) -> uint8 (T, C, H, W)`` reads only those."""

    def __init__(self, name: str, native_frames: int, native_fps: float, fps: float | None = None,
                 short_side: int | None = None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"data.fps must be positive, got {fps}")
        if short_side is not None and short_side < 1:
            raise ValueError(f"data.short_side must be at least 1, got {short_side}")
        self.name, self.native_frames, self.native_fps = name, native_frames, native_fps
        self.fps = fps or native_fps
        self.short_side = short_side
        self.total_frames = math.ceil(native_frames * self.fps / native_fps - 1e-9)
        self.start, self.stop = 0, self.total_frames

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    def window(self, start: int, stop: int) -> Video:
        """This video restricted to output frames ``[start, stop)`` of its whole timeline."""
        if not 0 <= start < stop <= self.total_frames:
            raise ValueError(f"{self.name}: window [{start}, {stop}) is outside its {self.total_frames} frames")
        view = copy.copy(self)
        view.start, view.stop = start, stop
        return view

    def frames(self, indices: Sequence[int]) -> Tensor:
        """uint8 ``(len(indices), C, H, W)``: frames ``indices`` (counted from the window's start)."""
        if not all(0 <= i < self.num_frames for i in indices):
            raise IndexError(f"{self.name}: frame indices {list(indices)} outside 0..{self.num_frames - 1}")
        native = [self.native_index(self.start + i) for i in indices]
        return _resize_short_side(self._read(native), self.short_side)

    def native_index(self, frame: int) -> int:
        """The stored frame shown at output frame ``frame`` of the whole timeline."""
        return min(int(frame * self.native_fps / self.fps + 1e-9), self.native_frames - 1)

    @abc.abstractmethod
    def _read(self, native: list[int]) -> Tensor:
        """Stored frames ``native`` as uint8 ``(T, C, H, W)``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, frames {self.start}..{self.stop - 1} at {self.fps:g} fps)"


class VideoFile(Video):
    """A video file decoded with PyAV; seeks to the keyframe before each wanted frame
    (:func:`~selfsup_video.videoio.read_frames`). Rescaling happens in FFmpeg's converter."""

    def __init__(self, index: VideoIndex, fps: float | None = None, short_side: int | None = None) -> None:
        super().__init__(index.path, index.num_frames, index.fps, fps, short_side)
        self.index = index

    def _read(self, native: list[int]) -> Tensor:
        size = _short_side_size(self.index.height, self.index.width, self.short_side)
        return torch.from_numpy(read_frames(self.index, native, size)).permute(0, 3, 1, 2)


class FrameFolder(Video):
    """A folder of frame images (sorted by file name), decoded as RGB on access."""

    def __init__(self, files: Sequence[Path], native_fps: float, fps: float | None = None,
                 short_side: int | None = None) -> None:
        super().__init__(str(Path(files[0]).parent), len(files), native_fps, fps, short_side)
        self.files = tuple(files)

    def _read(self, native: list[int]) -> Tensor:
        images = [_decode(self.files[i]) for i in native]
        if any(image.shape != images[0].shape for image in images):
            raise ValueError(f"{self.name}: frames differ in size ({sorted({tuple(i.shape) for i in images})}); "
                             f"all frames of a video must have one size")
        return torch.stack(images)


class FrameArray(Video):
    """Frames ``frames[offset:offset + length]`` of a uint8 array ``(N, H, W, 3)`` shared by all videos."""

    def __init__(self, name: str, frames: np.ndarray, offset: int, length: int, native_fps: float,
                 fps: float | None = None, short_side: int | None = None) -> None:
        super().__init__(name, length, native_fps, fps, short_side)
        self.array, self.offset = frames, offset

    def _read(self, native: list[int]) -> Tensor:
        return torch.from_numpy(self.array[[self.offset + i for i in native]]).permute(0, 3, 1, 2)


def _short_side_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    if short_side is None or min(height, width) == short_side:
        return None
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_short_side(frames: Tensor, short_side: int | None) -> Tensor:
    size = _short_side_size(frames.shape[-2], frames.shape[-1], short_side)
    if size is None:
        return frames
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(frames, list(size), antialias=True)


def _decode(path: Path) -> Tensor:
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ValueError(f"{path}: cannot decode this frame image ({error}); remove or replace the file") from None
