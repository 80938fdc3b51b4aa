"""Evaluating a two-tower encoder: image-text retrieval and zero-shot classification by prompts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import MinLen
from torch import Tensor

from selfsup_pairs.encoders import TwoTowerEncoder
from toolkit.interfaces import DataSource, EvalContext, Evaluator, NotEvaluable
from toolkit.limits import Positive

DEFAULT_PROMPTS = ("a photo of a {}.",)
"""CLIP's default prompt (Radford et al. 2021, sec. 3.1.4)."""


class Retrieval(Evaluator):
    """Image->text and text->image Recall@K on the pairs of one evaluation split (the standard
    protocol of Flickr8k/30k and COCO, e.g. Karpathy & Fei-Fei 2015; CLIP's table 13).

    Every image of the ``role`` split and every one of its captions are embedded (images
    through the augmentation's evaluation transform, captions as they are) and compared by
    cosine similarity. An image query is a hit at ``k`` when any of its own captions is among
    the ``k`` most similar of all captions; a caption query when its image is among the ``k``
    most similar images (see :func:`recall_at_k`). Reports ``i2t_r<k>``, ``t2i_r<k>`` for
    every ``k`` of ``ks`` and ``rsum``, their sum (in ``[0, 2 len(ks)]``). Chance on Flickr8k's
    1k test set: ``i2t_r1`` 5/5000, ``t2i_r1`` 1/1000.
    """

    def __init__(self, ks: Annotated[tuple[Positive, ...], MinLen(1)] = (1, 5, 10),
                 role: Literal["train", "test"] = "test") -> None:
        self.ks, self.role = sorted(set(ks)), role

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        _require_two_tower(context, "retrieval")
        source = context.source(self.role)
        images, captions, owner = [], [], []
        for i in range(len(source)):
            item = source[i]
            if not isinstance(item, Mapping) or "image" not in item or "text" not in item:
                raise NotEvaluable(f"retrieval needs image-text pairs, and the {self.role} data gives "
                                   f"{type(item).__name__} items; use a pairs source (flickr8k, image-text-csv)")
            texts = [item["text"]] if isinstance(item["text"], str) else list(item["text"])
            images.append(item["image"])
            captions += texts
            owner += [i] * len(texts)
        return recall_at_k(context.embed(images), context.embed(captions), torch.tensor(owner), self.ks)


class ZeroShot(Evaluator):
    """Zero-shot classification by prompts (Radford et al. 2021, sec. 3.1.4): a class is the text
    tower's embedding of its name in ``prompts``, each image goes to the most similar class.

    With ``u`` an image's normalised embedding and ``w_c = normalize(mean_p normalize(g(p(c))))``
    for the prompts ``p`` and class names ``c`` (CLIP's prompt ensembling over embeddings), the
    prediction is ``argmax_c u . w_c``. ``data`` is a nested data source block of labelled
    images (``{name: image-npz, path: ..., split: test}``), its paths relative to the recipe;
    ``classes`` are the names of its labels in label order (the image sources do not carry
    them: CIFAR-10's are airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
    A source with a ``classes`` or ``class_names`` attribute needs none. Reports
    ``zero_shot_top1`` (and ``zero_shot_top5`` with more than 5 classes); chance is ``1 / C``.
    """

    def __init__(self, data: DataSource, classes: list[str] | None = None,
                 prompts: Annotated[tuple[str, ...], MinLen(1)] = DEFAULT_PROMPTS) -> None:
        if data.labels is None:
            raise ValueError(f"evaluator zero-shot: its data ({type(data).__name__}) has no labels; give a labelled "
                             f"image source, e.g. {{name: image-npz, path: cifar10.npz, split: test}}")
        names = classes or getattr(data, "classes", None) or getattr(data, "class_names", None)
        if not names:
            raise ValueError(f"evaluator zero-shot: its data ({type(data).__name__}) does not name its classes; list "
                             f"them in label order as the evaluator's classes: [airplane, automobile, ...]")
        if len(names) < int(data.labels.max()) + 1:
            raise ValueError(f"evaluator zero-shot: classes names {len(names)} classes, but the data has labels up to "
                             f"{int(data.labels.max())}; name every class, in label order")
        unfilled = [p for p in prompts if "{}" not in p]
        if unfilled:
            raise ValueError(f"evaluator zero-shot: prompt {unfilled[0]!r} has no {{}} for the class name; write "
                             f"prompts like 'a photo of a {{}}.'")
        self.data, self.classes, self.prompts = data, [str(n) for n in names], list(prompts)

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        _require_two_tower(context, "zero-shot")
        images = context.embed([self.data[i] for i in range(len(self.data))])
        texts = context.embed([p.format(c) for c in self.classes for p in self.prompts])
        classes = F.normalize(F.normalize(texts, dim=1).view(len(self.classes), len(self.prompts), -1).mean(1), dim=1)
        scores = F.normalize(images, dim=1) @ classes.T  # (M, C)
        labels = self.data.labels
        metrics = {"zero_shot_top1": _top_k(scores, labels, 1)}
        if len(self.classes) > 5:
            metrics["zero_shot_top5"] = _top_k(scores, labels, 5)
        return metrics


def recall_at_k(images: Tensor, captions: Tensor, owner: Tensor, ks: list[int], chunk: int = 1024) -> dict[str, float]:
    """Recall@K both ways for ``images: (M, D)``, ``captions: (K, D)`` and ``owner: (K,)`` int64,
    the image of each caption.

    With ``s`` the cosine similarity, the rank of image query ``i`` is the number of other
    images' captions scored at least as high as its best own caption,
    ``r_i = #{c : owner(c) != i, s(i, c) >= max_{owner(c') = i} s(i, c')}``; the rank of caption
    query ``c`` is ``r_c = #{j != owner(c) : s(j, c) >= s(owner(c), c)}``. Ties count against the
    query, so a collapsed encoder (every score equal) scores 0, not 1. Then
    ``i2t_r<k> = mean_i [r_i < k]`` and ``t2i_r<k> = mean_c [r_c < k]``; ``rsum`` sums them all.
    Images without captions are not queries.
    """
    u, v = F.normalize(images.float(), dim=1), F.normalize(captions.float(), dim=1)
    image_ranks, caption_ranks = [], []
    for start in range(0, len(u), chunk):
        rows = torch.arange(start, min(start + chunk, len(u)))
        similarity = u[rows] @ v.T  # (R, K)
        own = owner[None, :] == rows[:, None]
        best = similarity.masked_fill(~own, float("-inf")).max(dim=1).values
        queries = own.any(dim=1)
        image_ranks.append(((similarity >= best[:, None]) & ~own).sum(dim=1)[queries])
    for start in range(0, len(v), chunk):
        columns = torch.arange(start, min(start + chunk, len(v)))
        similarity = v[columns] @ u.T  # (R, M)
        positive = similarity.gather(1, owner[columns, None])
        others = torch.ones_like(similarity, dtype=torch.bool).scatter_(1, owner[columns, None], False)
        caption_ranks.append(((similarity >= positive) & others).sum(dim=1))
    ranks = {"i2t": torch.cat(image_ranks), "t2i": torch.cat(caption_ranks)}
    metrics = {f"{direction}_r{k}": (rank < k).float().mean().item() for direction, rank in ranks.items() for k in ks}
    metrics["rsum"] = sum(metrics.values())
    return metrics


def _require_two_tower(context: EvalContext, name: str) -> None:
    if not isinstance(context.encoder, TwoTowerEncoder):
        raise NotEvaluable(f"{name} compares images with texts and needs a two-tower encoder; "
                           f"{type(context.encoder).__name__} embeds one modality")


def _top_k(scores: Tensor, labels: Tensor, k: int) -> float:
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()
