"""Image data sources: arrays in npz files, JPEG bytes in npz files, and image folders.

Items are uint8 tensors ``(C, H, W)``; labels are int64 class indices, or ``None`` for
unlabelled data. Layouts without a test split of their own hold one out
(:func:`toolkit.data.holdout_split`).

Data that fits in the training device's memory can live there (``on_device: true`` on the npz
sources): the images are decoded once, kept as one uint8 tensor ``(N, C, H, W)`` on the device
(CIFAR-10's 50,000 training images: 154 MB), and ``source[indices]`` gathers a batch there
(:attr:`toolkit.interfaces.DataSource.device`). With ``augmentation.device: batch`` a step then
costs one indexing operation and no host work per item; the loader-worker path stays the default,
for data that does not fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit.data import holdout_split, split_folder, subset_indices
from toolkit.interfaces import DataSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@declare(Contract(produces={"image"}))
class ImageNpz(DataSource):
    """Decoded images in an ``.npz``: ``x_{split}`` (or one list ``x``) uint8 ``(N, H, W[, C])``
    and optional labels ``y_{split}`` (or ``y``) integer ``(N,)``; without labels the data is
    unlabelled. A file without ``x_test`` has no test split: ``train`` and ``test`` are a seeded
    held-out split of ``x_train`` (or ``x``) by ``eval.holdout_fraction``.

    ``limit`` keeps a fixed random subset of that many items. ``max_value`` rescales integer
    images whose range is not 0-255 (sklearn's digits use 0-16). ``on_device`` keeps the images
    in the training device's memory (see the module's docstring).
    """

    def __init__(self, path: Path, split: str = "train", limit: int | None = None, max_value: int = 255,
                 holdout_fraction: float = 0.1, on_device: bool = False,
                 device: torch.device | None = None) -> None:
        with np.load(_existing(path)) as archive:
            x_key, one_list = _split_key(archive.files, "x", split, path)
            y_key = "y" + x_key[1:]
            images = archive[x_key]
            labels = archive[y_key] if y_key in archive.files else None
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or not np.issubdtype(images.dtype, np.integer):
            raise ValueError(f"{path}: {x_key} must be integer images (N, H, W[, C]), got {images.dtype} "
                             f"{images.shape}")
        keep, self.split_note = _keep(len(images), labels, split, one_list, limit, holdout_fraction,
                                      f"{path} ({x_key})")
        images = images[keep]
        if max_value != 255:
            images = (images.astype(np.float32) * (255.0 / max_value)).round().clip(0, 255)
        self.images = torch.from_numpy(np.ascontiguousarray(images.astype(np.uint8))).permute(0, 3, 1, 2)
        self.labels, self.num_classes = _labels(labels, keep)
        if on_device:
            self.images, self.device = _resident(self.images, device)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


@declare(Contract(produces={"image"}))
class JpegNpz(DataSource):
    """JPEG bytes in an ``.npz`` (the layout of ``cifar10_jpeg.npz``): ``jpeg_{split}`` uint8
    (concatenated files), ``offsets_{split}`` int64 ``(N + 1,)``, optional ``y_{split}``. A file
    without ``jpeg_test`` has no test split: ``train`` and ``test`` are a seeded held-out split
    of ``jpeg_train`` by ``eval.holdout_fraction``.

    Images are decoded on access (libjpeg-turbo through ``torchvision.io``), so all 50,000
    CIFAR-10 training images cost 46 MB of memory. ``limit`` keeps a fixed random subset.
    ``on_device`` decodes every image once, when the source is built, and keeps them in the
    training device's memory (see the module's docstring; they must share one size).
    """

    def __init__(self, path: Path, split: str = "train", limit: int | None = None,
                 holdout_fraction: float = 0.1, on_device: bool = False,
                 device: torch.device | None = None) -> None:
        self.path = _existing(path)
        with np.load(self.path) as archive:
            key, one_list = _split_key(archive.files, "jpeg", split, path)
            stored = key[len("jpeg"):]
            self.bytes = torch.from_numpy(archive[key])
            offsets = archive[_pick_key(archive.files, [f"offsets{stored}"], path)]
            labels = archive[f"y{stored}"] if f"y{stored}" in archive.files else None
        keep, self.split_note = _keep(len(offsets) - 1, labels, split, one_list, limit, holdout_fraction,
                                      f"{path} ({key})")
        self.starts, self.ends = offsets[:-1][keep], offsets[1:][keep]
        self.labels, self.num_classes = _labels(labels, keep)
        self.split = split
        self.images: Tensor | None = None
        if on_device:
            self.images, self.device = _resident(_stack_decoded(self, path), device)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int | Tensor) -> Tensor:
        if self.images is not None:
            return self.images[index]
        data = self.bytes[int(self.starts[index]):int(self.ends[index])]
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise ValueError(f"{self.path}: image {index} of split {self.split!r} is not a valid JPEG ({error}); "
                             f"re-create the file from its source") from None


@declare(Contract(produces={"image"}))
class ImageFolder(DataSource):
    """Image files in a folder (found recursively, decoded as RGB on access):

    - ``path/<class>/*.jpg``: labelled, the classes are the sorted folder names;
    - ``path/*.jpg``: unlabelled (``label: auto`` tells the two apart; ``none`` ignores class
      folders; ``folder`` requires them);
    - ``path/train/...`` and ``path/test/...``: each split is its own folder. Without a
      ``test/`` folder the images are one list and ``train`` / ``test`` are a seeded held-out
      split of it (``eval.holdout_fraction``, stratified by class), never the same images.

    ``limit`` keeps a fixed random subset.
    """

    def __init__(self, path: Path, split: str = "train", label: Literal["auto", "folder", "none"] = "auto",
                 limit: int | None = None, holdout_fraction: float = 0.1) -> None:
        root, one_list = split_folder(_existing(path), split)
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        if not files:
            raise ValueError(f"{root}: no images found; expected {root}/<class>/<image>.jpg or {root}/<image>.jpg "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        loose = [f for f in files if f.parent == root]
        if label == "auto" and loose and len(loose) < len(files):
            raise ValueError(f"{root}: holds images directly ({loose[0].name}) and in sub-folders; put every image "
                             f"in a class folder (labelled) or set data.label: none (unlabelled)")
        if label == "folder" and loose:
            raise ValueError(f"{root}: data.label is folder but {loose[0].name} lies outside a class folder; move it "
                             f"into {root}/<class>/ or set data.label: none")
        labelled = label == "folder" or (label == "auto" and not loose)
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if labelled else []
        labels = (np.array([self.classes.index(f.relative_to(root).parts[0]) for f in files]) if labelled
                  else None)
        keep, self.split_note = _keep(len(files), labels, split, one_list, limit, holdout_fraction,
                                      f"image folder {root}")
        self.files = [files[i] for i in keep]
        self.labels, self.num_classes = _labels(labels, keep)
        if labelled:
            self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        path = self.files[index]
        from torchvision.io import ImageReadMode, decode_image

        try:
            return decode_image(str(path), mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise ValueError(f"{path}: cannot decode this image ({error}); remove or replace the file") from None


def _resident(images: Tensor, device: torch.device | None) -> tuple[Tensor, torch.device]:
    """``images`` contiguous on ``device`` (the training device; the CPU when none is given)."""
    device = torch.device(device or "cpu")
    return images.contiguous().to(device), device


def _stack_decoded(source: JpegNpz, path: Path) -> Tensor:
    """Every image of ``source`` decoded, as one uint8 tensor ``(N, C, H, W)``."""
    images = [source[i] for i in range(len(source))]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"{path}: data.on_device stacks the images into one tensor, but they have "
                         f"{len(shapes)} shapes ({', '.join(map(str, sorted(shapes)[:3]))}, ...); set data.on_device: "
                         f"false")
    return torch.stack(images) if images else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def _existing(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data.path: {path} does not exist; set data.path in the recipe (relative to the "
                                f"recipe's folder) or on the command line (relative to the working directory): "
                                f"selfsup train RECIPE data.path=/path/to/data")
    return path


def _pick_key(files: list[str], candidates: list[str], path: Path) -> str:
    for key in candidates:
        if key in files:
            return key
    raise KeyError(f"{path}: none of {', '.join(candidates)} is in this file (it has {', '.join(files)}); "
                   f"check data.split")


def _split_key(files: list[str], prefix: str, split: str, path: Path) -> tuple[str, bool]:
    """The array holding ``split`` (``{prefix}_{split}``, or one list ``{prefix}_train`` /
    ``{prefix}``) and whether it is one list to split with :func:`holdout_split`."""
    own = f"{prefix}_{split}"
    if own in files and (f"{prefix}_test" in files or split not in ("train", "test", "all")):
        return own, False
    if split in ("train", "test", "all"):
        for key in (f"{prefix}_train", prefix):
            if key in files:
                return key, True
    raise KeyError(f"{path}: none of {own}, {prefix}_train, {prefix} is in this file (it has {', '.join(files)}); "
                   f"check data.split")


def _keep(size: int, labels: np.ndarray | None, split: str, one_list: bool, limit: int | None,
          holdout_fraction: float, where: str) -> tuple[np.ndarray, str | None]:
    """Indices of the items ``split`` keeps (held out of one list, then limited) and the split's note."""
    chosen, note = np.arange(size), None
    if one_list:
        held, note = holdout_split(size, split, holdout_fraction,
                                   None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64)),
                                   where)
        chosen = held.numpy()
    return chosen[subset_indices(len(chosen), limit).numpy()], note


def _labels(labels: np.ndarray | None, keep: np.ndarray) -> tuple[Tensor | None, int | None]:
    if labels is None:
        return None, None
    tensor = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return tensor[torch.from_numpy(keep)], int(tensor.max()) + 1 if len(tensor) else 0
