"""Image data sources: arrays in npz files, JPEG bytes in npz files, and image folders.

Items are uint8 tensors ``(C, H, W)``; labels are int64 class indices.

Data that fits in the training device's memory can live there (``on_device: true`` on the npz
sources): the images are decoded once, kept as one uint8 tensor ``(N, C, H, W)`` on the device
(CIFAR-10's 50,000 training images: 154 MB), and ``source[indices]`` gathers a batch there
(:attr:`toolkit.interfaces.DataSource.device`). With ``augmentation.device: batch`` a step then
costs one indexing operation and no host work per item; the loader-worker path stays the default,
for data that does not fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from toolkit.data import subset_indices
from toolkit.interfaces import DataSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class ImageNpz(DataSource):
    """Decoded images in an ``.npz``: ``x_{split}`` (or ``x``) uint8 ``(N, H, W[, C])`` and
    optional ``y_{split}`` (or ``y``) integer labels ``(N,)``.

    ``limit`` keeps a fixed random subset of that many items. ``max_value`` rescales integer
    images whose range is not 0-255 (sklearn's digits use 0-16). ``on_device`` keeps the images
    in the training device's memory (see the module's docstring).
    """

    def __init__(self, path: Path, split: str = "train", limit: int | None = None, max_value: int = 255,
                 on_device: bool = False, device: torch.device | None = None) -> None:
        with np.load(_existing(path)) as archive:
            x_key = _pick_key(archive.files, [f"x_{split}", "x"] if split == "train" else [f"x_{split}"], path)
            y_key = next((k for k in (f"y_{split}", "y" if x_key == "x" else None) if k in archive.files), None)
            images = archive[x_key]
            labels = archive[y_key] if y_key else None
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or not np.issubdtype(images.dtype, np.integer):
            raise ValueError(f"{path}: {x_key} must be integer images (N, H, W[, C]), got {images.dtype} "
                             f"{images.shape}")
        keep = subset_indices(len(images), limit).numpy()
        images = images[keep]
        if max_value != 255:
            images = (images.astype(np.float32) * (255.0 / max_value)).round().clip(0, 255)
        self.images = torch.from_numpy(np.ascontiguousarray(images.astype(np.uint8))).permute(0, 3, 1, 2)
        self.labels, self.num_classes = _labels(labels[keep] if labels is not None else None)
        if on_device:
            self.images, self.device = _resident(self.images, device)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


class JpegNpz(DataSource):
    """JPEG bytes in an ``.npz`` (the layout of ``cifar10_jpeg.npz``): ``jpeg_{split}`` uint8
    (concatenated files), ``offsets_{split}`` int64 ``(N + 1,)``, optional ``y_{split}``.

    Images are decoded on access (libjpeg-turbo through ``torchvision.io``), so all 50,000
    CIFAR-10 training images cost 46 MB of memory. ``limit`` keeps a fixed random subset.
    ``on_device`` decodes every image once, when the source is built, and keeps them in the
    training device's memory (see the module's docstring; they must share one size).
    """

    def __init__(self, path: Path, split: str = "train", limit: int | None = None, on_device: bool = False,
                 device: torch.device | None = None) -> None:
        self.path = _existing(path)
        with np.load(self.path) as archive:
            self.bytes = torch.from_numpy(archive[_pick_key(archive.files, [f"jpeg_{split}"], path)])
            offsets = archive[_pick_key(archive.files, [f"offsets_{split}"], path)]
            labels = archive[f"y_{split}"] if f"y_{split}" in archive.files else None
        keep = subset_indices(len(offsets) - 1, limit).numpy()
        self.starts, self.ends = offsets[:-1][keep], offsets[1:][keep]
        self.labels, self.num_classes = _labels(labels[keep] if labels is not None else None)
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


class ImageFolder(DataSource):
    """One folder per class: ``path/<split>/<class>/*.jpg`` or, if there is no ``<split>``
    folder, ``path/<class>/*.jpg``. Classes are the sorted folder names; images are decoded
    as RGB on access. ``limit`` keeps a fixed random subset.
    """

    def __init__(self, path: Path, split: str = "train", limit: int | None = None) -> None:
        root = _existing(path)
        if (root / split).is_dir():
            root = root / split
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files = [(f, label) for label, name in enumerate(classes)
                 for f in sorted((root / name).rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise ValueError(f"{root}: no images found; expected {root}/<class>/<image>.jpg "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        keep = subset_indices(len(files), limit).tolist()
        self.files = [files[i][0] for i in keep]
        self.labels = torch.tensor([files[i][1] for i in keep], dtype=torch.int64)
        self.num_classes = len(classes)
        self.classes = classes

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


def _labels(labels: np.ndarray | None) -> tuple[Tensor | None, int | None]:
    if labels is None:
        return None, None
    tensor = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return tensor, int(tensor.max()) + 1 if len(tensor) else 0
