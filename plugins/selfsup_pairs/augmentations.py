"""Views of a pair: the image through a nested image augmentation, and one of its captions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Augmentation, Batch, View


@declare(Contract(consumes={"pairs"}, produces={"pairs"}, views=2))
class PairAugmentation(Augmentation):
    """``{"image": uint8 (C, H, W), "text": [c_0, ..., c_{K-1}]} -> [image_view, c_k]``.

    ``image`` is a nested augmentation block making one view per call (``n_views: 1``): any
    registered image augmentation, by default SimCLR's pipeline reduced to CLIP's only
    augmentation, a random square crop of the resized image (Radford et al. 2021, sec. 2.5: no
    colour jitter, grayscale, blur or flip, which would contradict captions such as "a man in a
    red shirt on the left"). The caption index ``k ~ U{0, K-1}`` is drawn from torch's
    generator, which the engine seeds per item from its position in the epoch, so the same step
    sees the same caption after a resume, on any number of workers or processes. A single
    caption (a string) is used as it is.

    An image augmentation that works on whole batches on the training device (``simclr`` with
    ``device: batch``) keeps doing so: its ``on_device`` runs on the image views.

    The evaluation twin dispatches on what it is given: a string passes unchanged (a caption or
    a prompt), a pair is evaluated as its image, and an image (tensor, array, path, PIL image)
    goes through ``image.eval_transform``. Evaluators embed images and captions separately.
    """

    n_views = 2

    def __init__(self, image: Augmentation = {"name": "simclr", "size": 64, "n_views": 1, "scale": (0.5, 1.0),
                                              "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0,
                                              "flip_prob": 0.0, "eval_crop_fraction": 1.0}) -> None:
        if image.n_views != 1:
            raise ValueError(f"augmentation.image.n_views must be 1: a pair has one image view next to its caption, "
                             f"but {type(image).__name__} makes {image.n_views}; set augmentation.image.n_views: 1 "
                             f"(and no extra crops: simclr's local_crops: 0)")
        self.image = image

    def __call__(self, item: Any) -> list[View]:
        image, text = _modalities(item)
        if isinstance(text, str):
            caption = text
        else:
            caption = text[int(torch.randint(len(text), ()))]
        return [self.image(image)[0], caption]

    def eval_transform(self, item: Any) -> View:
        if isinstance(item, str):
            return item
        if isinstance(item, Mapping):
            item = _modalities(item)[0]
        return self.image.eval_transform(item)

    def on_device(self, batch: Batch) -> Batch:
        """The image augmentation's batched work on the image views (``batch.views[0]``), if it has any."""
        if not self.image.batched:
            return batch
        images = self.image.on_device(dataclasses.replace(batch, views=batch.views[:1]))
        return dataclasses.replace(batch, views=[images.views[0], *batch.views[1:]])


def _modalities(item: Any) -> tuple[Any, str | Sequence[str]]:
    """The image and the caption(s) of a pair, with an error that says what a pair is."""
    if not isinstance(item, Mapping) or "image" not in item or "text" not in item:
        got = f"a dict with keys {', '.join(map(str, item))}" if isinstance(item, Mapping) else type(item).__name__
        raise TypeError(f"augmentation pairs takes pairs {{'image': ..., 'text': [captions]}} (data flickr8k or "
                        f"image-text-csv), got {got}")
    text = item["text"]
    if not isinstance(text, str) and (not isinstance(text, Sequence) or not text
                                      or not all(isinstance(t, str) for t in text)):
        raise ValueError(f"augmentation pairs: a pair's text must be a caption or a non-empty list of captions, got "
                         f"{text!r:.80}")
    return item["image"], text
