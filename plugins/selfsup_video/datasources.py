"""Video data sources: video files, folders of frame images, and frame arrays with offsets.

All three share the same split, unit and label rules (:class:`VideoSource`):

- ``split``: when the layout has a ``<split>`` folder (``path/train/``, ``path/test/``), that folder's
  videos, whole. Otherwise a time split of every video: ``train`` is its first ``train_fraction`` of
  frames, ``test`` the rest, ``all`` every frame (a video too short to leave a test part, such
  as a one-frame video, is in ``train`` only).
- ``unit``: what an item is. ``video`` (training): a lazy :class:`~selfsup_video.videos.Video`
  handle. ``frame`` (evaluation): every ``frame_stride``-th frame, uint8 ``(C, H, W)``. ``clip``
  (evaluation of clip encoders): ``clip_length`` frames ``clip_step`` apart centred at every
  ``frame_stride``-th frame (``t + (k - clip_length // 2) * clip_step``, clamped to the split),
  uint8 ``(T, C, H, W)``. Frame and clip sources expose ``video_ids`` and ``frame_times``
  (int64 ``(len,)``: the item's video and its frame on the video's whole timeline) for the
  ``video-retrieval`` evaluator.
- ``label``: ``video`` (the video's position in the sorted list of all videos) or ``class`` (a class
  folder ``path/<class>/...``, or the ``labels`` array of a frame-array file).
- ``limit`` keeps a fixed random subset of that many videos; ``fps`` and ``short_side`` control
  the frame rate and resolution (see :mod:`selfsup_video.videos`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from selfsup_video.videoio import VIDEO_EXTENSIONS, probe
from selfsup_video.videos import FrameArray, FrameFolder, Video, VideoFile
from toolkit.compatibility import Contract, declare
from toolkit.data import subset_indices
from toolkit.interfaces import DataSource

Unit = Literal["video", "frame", "clip"]
Label = Literal["video", "class"]
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@declare(lambda p: Contract(produces={{"video": "video", "frame": "image", "clip": "clip"}[p.get("unit", "video")]}))
class VideoSource(DataSource):
    """Videos seen through a split, a unit and a label rule (module docstring); the base of the three sources."""

    def __init__(self, videos: Sequence[Video], classes: Sequence[int] | None, split: str, whole: bool, unit: Unit,
                 label: Label, train_fraction: float, frame_stride: int, clip_length: int, clip_step: int,
                 limit: int | None, where: str) -> None:
        if unit not in ("video", "frame", "clip") or label not in ("video", "class"):
            raise ValueError(f"{where}: data.unit must be video, frame or clip and data.label video or class, got "
                             f"{unit!r} and {label!r}")
        if not 0 < train_fraction < 1:
            raise ValueError(f"data.train_fraction must be in (0, 1), got {train_fraction}")
        if min(frame_stride, clip_length, clip_step) < 1:
            raise ValueError("data.frame_stride, data.clip_length and data.clip_step must be at least 1")
        if not whole and split not in ("train", "test", "all"):
            raise ValueError(f"{where}: data.split {split!r} is neither a folder there nor a time split (train, test, "
                             f"all)")
        if label == "class" and classes is None:
            raise ValueError(f"{where}: data.label is class, but the videos have no classes (put them in class "
                             f"folders, or give a frame-array file a labels array); use label: video")
        keep = subset_indices(len(videos), limit).tolist()
        self.videos: list[Video] = []
        ids: list[int] = []
        for i in keep:
            window = (0, videos[i].total_frames) if whole or split == "all" else _time_split(
                videos[i].total_frames, train_fraction, split)
            if window[1] > window[0]:
                self.videos.append(videos[i].window(*window))
                ids.append(i)
        if not self.videos:
            raise ValueError(f"{where}: no video has frames in split {split!r}")
        self.unit, self.clip_length, self.clip_step = unit, clip_length, clip_step
        video_labels = [classes[i] if label == "class" else i for i in ids]
        self.num_classes = (max(classes) + 1) if label == "class" else len(videos)
        if unit == "video":
            self.entries = [(v, 0) for v in range(len(self.videos))]
        else:
            self.entries = [(v, t) for v, video in enumerate(self.videos)
                            for t in range(0, video.num_frames, frame_stride)]
        self.video_ids = torch.tensor([ids[v] for v, _ in self.entries], dtype=torch.int64)
        self.labels = torch.tensor([video_labels[v] for v, _ in self.entries], dtype=torch.int64)
        self.frame_times = (None if unit == "video" else
                            torch.tensor([self.videos[v].start + t for v, t in self.entries], dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.entries)

    def item_id(self, index: int) -> str:
        """The video's name (its file or folder), with the frame for frame and clip units."""
        v, t = self.entries[index]
        video = self.videos[v]
        return video.name if self.unit == "video" else f"{video.name} frame {video.start + t}"

    def thumbnail(self, index: int) -> Tensor:
        """The item's frame, uint8 ``(C, H, W)``: a clip's or a whole video's middle one."""
        v, t = self.entries[index]
        video = self.videos[v]
        return video.frames([video.num_frames // 2 if self.unit == "video" else t])[0]

    def __getitem__(self, index: int) -> Video | Tensor:
        v, t = self.entries[index]
        video = self.videos[v]
        if self.unit == "video":
            return video
        if self.unit == "frame":
            return video.frames([t])[0]
        offsets = [(k - self.clip_length // 2) * self.clip_step for k in range(self.clip_length)]
        return video.frames([min(max(t + o, 0), video.num_frames - 1) for o in offsets])


class VideoFiles(VideoSource):
    """Video files (``.mp4``, ``.avi``, ``.webm``, ``.mkv``, ``.mov``), one video per file, decoded
    with PyAV: ``path/[<split>/][<class>/]<video>.<ext>`` (files sorted by path; with
    ``label: class`` the first folder level below the split is the class).

    Every file is demuxed once (cached per process) to index its frames; a file that cannot be
    opened or has no video stream raises a ``ValueError`` naming it.
    """

    def __init__(self, path: Path, split: str = "train", unit: Unit = "video", label: Label = "video",
                 train_fraction: float = 0.7, frame_stride: int = 1, clip_length: int = 8, clip_step: int = 1,
                 fps: float | None = None, short_side: int | None = None, limit: int | None = None) -> None:
        root, whole = _root(path, split)
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
        if not files:
            raise FileNotFoundError(f"video-files: no {', '.join(VIDEO_EXTENSIONS)} files under {root}")
        videos = [VideoFile(probe(f), fps, short_side) for f in files]
        classes, self.class_names = _folder_classes([f.parent for f in files], root)
        super().__init__(videos, classes, split, whole, unit, label, train_fraction, frame_stride, clip_length,
                         clip_step, limit, str(root))


class FrameFolders(VideoSource):
    """One folder of frame images per video: ``path/[<split>/][<class>/]<video>/<frame>.jpg``.

    A video is every folder that directly holds images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``,
    ``.webp``); its frames are those images sorted by file name (zero-padded numbers sort in
    time order). ``native_fps`` is the rate the frames were extracted at (used by ``fps``).
    """

    def __init__(self, path: Path, split: str = "train", unit: Unit = "video", label: Label = "video",
                 train_fraction: float = 0.7, frame_stride: int = 1, clip_length: int = 8, clip_step: int = 1,
                 native_fps: float = 30.0, fps: float | None = None, short_side: int | None = None,
                 limit: int | None = None) -> None:
        root, whole = _root(path, split)
        folders: dict[Path, list[Path]] = {}
        for f in sorted(root.rglob("*")):
            if f.suffix.lower() in FRAME_EXTENSIONS and f.is_file():
                folders.setdefault(f.parent, []).append(f)
        if not folders:
            raise FileNotFoundError(f"frame-folders: no frame images under {root}; expected "
                                    f"{root}/<video>/<frame>.jpg (extensions {', '.join(FRAME_EXTENSIONS)})")
        if root in folders:
            raise ValueError(f"frame-folders: {folders[root][0]} lies directly in {root}; put each video's frames in "
                             f"a folder of its own")
        ordered = sorted(folders)
        videos = [FrameFolder(folders[folder], native_fps, fps, short_side) for folder in ordered]
        classes, self.class_names = _folder_classes(ordered, root, skip_last=True)
        super().__init__(videos, classes, split, whole, unit, label, train_fraction, frame_stride, clip_length,
                         clip_step, limit, str(root))


class FrameArrays(VideoSource):
    """Frames of all videos in one ``.npz`` (the layout of ``shared/data/davis2016_val``):
    ``frames`` uint8 ``(N, H, W, 3)``, ``offsets`` int ``(V + 1,)`` (video ``v`` is
    ``frames[offsets[v]:offsets[v + 1]]``), and optionally ``seq_names`` ``(V,)``, ``fps`` (else
    ``native_fps``) and ``labels`` int ``(V,)`` for ``label: class``. Other arrays (DAVIS's
    ``masks``) are ignored. There is no split folder: splits are time splits.
    """

    def __init__(self, path: Path, split: str = "train", unit: Unit = "video", label: Label = "video",
                 train_fraction: float = 0.7, frame_stride: int = 1, clip_length: int = 8, clip_step: int = 1,
                 native_fps: float = 30.0, fps: float | None = None, short_side: int | None = None,
                 limit: int | None = None) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"frame-arrays: {path} does not exist; set data.path in the recipe (relative to "
                                    f"the recipe's folder) or on the command line: data.path=/path/to/frames.npz")
        with np.load(path) as archive:
            missing = [k for k in ("frames", "offsets") if k not in archive.files]
            if missing:
                raise KeyError(f"{path}: missing arrays {', '.join(missing)} (it has {', '.join(archive.files)}); "
                               f"frame-arrays needs frames (N, H, W, 3) uint8 and offsets (V + 1,)")
            frames, offsets = archive["frames"], archive["offsets"].astype(np.int64)
            names = [str(n) for n in archive["seq_names"]] if "seq_names" in archive.files else None
            rate = float(archive["fps"]) if "fps" in archive.files else native_fps
            classes = archive["labels"].astype(np.int64).tolist() if "labels" in archive.files else None
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"{path}: frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        if offsets[0] != 0 or offsets[-1] != len(frames) or (np.diff(offsets) <= 0).any():
            raise ValueError(f"{path}: offsets must rise strictly from 0 to len(frames) = {len(frames)}")
        names = names or [f"video{v}" for v in range(len(offsets) - 1)]
        videos = [FrameArray(f"{path}:{names[v]}", frames, int(offsets[v]), int(offsets[v + 1] - offsets[v]), rate,
                             fps, short_side) for v in range(len(offsets) - 1)]
        self.names = names
        super().__init__(videos, classes, split, False, unit, label, train_fraction, frame_stride, clip_length,
                         clip_step, limit, str(path))


def _time_split(frames: int, train_fraction: float, split: str) -> tuple[int, int]:
    """Output frames ``[start, stop)`` of ``split``: the first ``round(frames * train_fraction)``
    (at least 1) frames are ``train``, the rest ``test``."""
    cut = min(max(round(frames * train_fraction), 1), frames)
    return (0, cut) if split == "train" else (cut, frames)


def _root(path: Path, split: str) -> tuple[Path, bool]:
    """The folder to list and whether it is a split folder (whose videos are used whole)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"data.path: {path} is not a folder; set data.path in the recipe (relative to the "
                                f"recipe's folder) or on the command line: data.path=/path/to/videos")
    return (path / split, True) if (path / split).is_dir() else (path, False)


def _folder_classes(folders: Sequence[Path], root: Path, skip_last: bool = False) -> tuple[list[int] | None, list[str]]:
    """Class of each video: the first folder level below ``root`` (``None`` when any video has
    none); ``skip_last``: the folders are the videos themselves, so their own name is no class."""
    parts = [folder.relative_to(root).parts[:-1] if skip_last else folder.relative_to(root).parts for folder in folders]
    if not parts or any(not p for p in parts):
        return None, []
    names = sorted({p[0] for p in parts})
    return [names.index(p[0]) for p in parts], names
