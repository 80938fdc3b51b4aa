"""Paired data sources: images with their captions, one item per image.

An item is a dict of modality -> value, ``{"image": uint8 (C, H, W), "text": [caption, ...]}``:
every caption of the image travels with it, so the augmentation picks one per step and the
retrieval evaluation scores all of them. Other pairings (audio-text, video-audio) fit the same
shape with other keys. Items have no labels (``labels = None``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit.data import holdout_split, subset_indices
from toolkit.interfaces import DataSource
from toolkit.limits import Positive

Pair = dict[str, object]
"""One item: ``{"image": uint8 (C, H, W), "text": list[str]}``."""

FLICKR8K_KEYS = ("images", "is_test", "captions", "caption_image")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class PairSource(DataSource):
    """Images ``(N, C, H, W)`` uint8 (held in memory) or image files, each with its captions."""

    labels = None
    num_classes = None

    def __init__(self, captions: list[list[str]], images: Tensor | None = None,
                 files: list[Path] | None = None) -> None:
        self.captions, self.images, self.files = captions, images, files

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> Pair:
        return {"image": self._image(index), "text": list(self.captions[index])}

    def _image(self, index: int) -> Tensor:
        if self.images is not None:
            return self.images[index]
        assert self.files is not None
        from torchvision.io import ImageReadMode, decode_image

        try:
            return decode_image(str(self.files[index]), mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise ValueError(f"{self.files[index]}: cannot decode this image ({error}); remove its rows from the "
                             f"captions file or replace the file") from None


@declare(Contract(produces={"pairs"}))
class Flickr8k(PairSource):
    """Flickr8k (Hodosh et al. 2013, "Framing Image Description as a Ranking Task"): photos with
    5 crowd-written captions each, in the npz layout of ``../shared/data/flickr8k`` (its README):
    ``images`` uint8 ``(M, H, W, 3)``, ``is_test`` bool ``(M,)``, ``captions`` UTF-8 bytes
    ``(K,)`` and ``caption_image`` int64 ``(K,)`` (caption ``k`` describes image
    ``caption_image[k]``; ``caption_number``, if present, orders an image's captions).

    ``split`` is the file's own split by image (``test``: the standard 1,000-image test set), so
    no image, and none of its captions, is on both sides. ``limit`` keeps a fixed random subset
    of that many images (with all their captions).
    """

    def __init__(self, path: Path, split: Literal["train", "test"] = "train", limit: Positive | None = None) -> None:
        path = _existing(path)
        with np.load(path) as archive:
            missing = [key for key in FLICKR8K_KEYS if key not in archive.files]
            if missing:
                raise ValueError(f"data.path: {path} lacks {', '.join(missing)} (it has {', '.join(archive.files)}); "
                                 f"the flickr8k source reads the npz layout of shared/data/flickr8k/README.md")
            images, is_test = archive["images"], archive["is_test"].astype(bool)
            stored = archive["captions"]
            texts = np.char.decode(stored, "utf-8") if stored.dtype.kind == "S" else stored.astype(str)
            owner = archive["caption_image"].astype(np.int64)
            number = archive["caption_number"] if "caption_number" in archive.files else np.zeros_like(owner)
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(f"data.path: {path}: images must be uint8 (M, H, W, 3), got {images.dtype} {images.shape}")
        chosen = np.flatnonzero(is_test == (split == "test"))
        chosen = chosen[subset_indices(len(chosen), limit).numpy()]
        order = np.lexsort((number, owner))  # by image, then caption number
        by_image: dict[int, list[str]] = {int(i): [] for i in chosen}
        for k in order:
            if int(owner[k]) in by_image:
                by_image[int(owner[k])].append(str(texts[k]).strip())
        bare = [int(i) for i in chosen if not by_image[int(i)]]
        if bare:
            raise ValueError(f"data.path: {path}: image {bare[0]} (and {len(bare) - 1} more) of split {split!r} has "
                             f"no caption; every image needs at least one")
        pixels = torch.from_numpy(np.ascontiguousarray(images[chosen])).permute(0, 3, 1, 2)
        super().__init__([by_image[int(i)] for i in chosen], images=pixels)
        self.split = split


@declare(Contract(produces={"pairs"}))
class ImageTextCsv(PairSource):
    """Your own image-caption pairs: a CSV (or tab-separated ``.tsv``) file with a header naming
    at least the columns ``image`` (a file path, relative to the CSV's folder) and ``caption``,
    one row per pair. Rows of the same image make one item with all its captions.

    An optional ``split`` column (``train`` / ``test``) gives the split of each image. Without
    it the images are one list: ``test`` is a seeded held-out ``eval.holdout_fraction`` of the
    images (never of single captions, so no image is on both sides) and ``train`` the rest.
    ``limit`` keeps a fixed random subset of that many images. Images are decoded on access.
    """

    def __init__(self, path: Path, split: Literal["train", "test", "all"] = "train", limit: Positive | None = None,
                 holdout_fraction: float = 0.1) -> None:
        path = _existing(path)
        rows, has_split = _read_pairs(path)
        files = list(dict.fromkeys(image for image, _, _ in rows))
        captions: dict[str, list[str]] = {image: [] for image in files}
        splits: dict[str, str] = {}
        for image, caption, row_split in rows:
            captions[image].append(caption)
            if splits.setdefault(image, row_split) != row_split:
                raise ValueError(f"{path}: image {image} is in split {splits[image]!r} and {row_split!r}; an image "
                                 f"and all its captions belong to one split")
        self.split_note = None
        if has_split:
            if split == "all":
                chosen = np.arange(len(files))
            else:
                chosen = np.array([i for i, image in enumerate(files) if splits[image] == split], dtype=np.int64)
        else:
            held, self.split_note = holdout_split(len(files), split, holdout_fraction, where=str(path))
            chosen = held.numpy()
        if len(chosen) == 0:
            raise ValueError(f"{path}: no image is in split {split!r} (the split column holds "
                             f"{', '.join(sorted(set(splits.values())))})")
        chosen = chosen[subset_indices(len(chosen), limit).numpy()]
        super().__init__([captions[files[i]] for i in chosen], files=[path.parent / files[i] for i in chosen])
        self.split = split


def _read_pairs(path: Path) -> tuple[list[tuple[str, str, str]], bool]:
    """``(image, caption, split)`` rows of a pairs file and whether it has a split column."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = reader.fieldnames or []
        missing = [c for c in ("image", "caption") if c not in columns]
        if missing:
            raise ValueError(f"{path}:1: the header lacks {', '.join(missing)}; a pairs file has the columns image "
                             f"and caption (and optionally split), got {', '.join(columns) or 'none'}")
        has_split = "split" in columns
        rows = []
        for row in reader:
            image, caption = (row["image"] or "").strip(), (row["caption"] or "").strip()
            row_split = (row["split"] or "").strip() if has_split else "train"
            if not image or not caption:
                raise ValueError(f"{path}:{reader.line_num}: empty image or caption")
            if row_split not in ("train", "test"):
                raise ValueError(f"{path}:{reader.line_num}: split {row_split!r} is neither train nor test")
            rows.append((image, caption, row_split))
    if not rows:
        raise ValueError(f"{path}: no pairs (only a header)")
    suffixes = {Path(image).suffix.lower() for image, _, _ in rows} - set(IMAGE_EXTENSIONS)
    if suffixes:
        raise ValueError(f"{path}: image column names files with {', '.join(sorted(suffixes))}; expected image files "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    return rows, has_split


def _existing(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} does not exist; set data.path in the recipe (relative to the "
                                f"recipe's folder) or on the command line: data.path=/path/to/file")
    return path
