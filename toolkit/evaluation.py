"""Frozen-feature evaluation: weighted cosine kNN and a linear probe, plus the feature cache.

Both evaluators read features from an :class:`~toolkit.interfaces.EvalContext`, which embeds a
data source's items through the augmentation's evaluation transform and the encoder in eval
mode, pooled to one vector per item.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any, Callable, Literal, Sequence, TextIO

import torch
from annotated_types import Ge, Gt
import torch.nn.functional as F
from torch import Tensor

from toolkit.data import UnreadableItem
from toolkit.interfaces import (
    Augmentation,
    DataSource,
    Encoder,
    EvalContext,
    Evaluator,
    NotEvaluable,
    pool,
    to_device,
)
from toolkit.progress import Progress


class KNNEvaluator(Evaluator):
    """Weighted cosine k-nearest-neighbour classification (Wu et al. 2018, "InstDisc").

    Each test feature votes with its ``k`` most cosine-similar training features; neighbour
    ``j`` adds ``exp(s_j / temperature)`` to the score of its class; the top class wins.
    Reports ``knn_top1`` (and ``knn_top5`` when there are more than 5 classes).
    """

    def __init__(self, k: Annotated[int, Ge(1)] = 200, temperature: Annotated[float, Gt(0)] = 0.07) -> None:
        self.k, self.temperature = k, temperature

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        train, train_labels = _labelled(context, "train", "knn")
        test, test_labels = _labelled(context, "test", "knn")
        scores = knn_scores(train, train_labels, test, self.k, self.temperature)
        metrics = {"knn_top1": _topk_accuracy(scores, test_labels, 1)}
        if scores.shape[1] > 5:
            metrics["knn_top5"] = _topk_accuracy(scores, test_labels, 5)
        return metrics


class LinearProbeEvaluator(Evaluator):
    """Multinomial logistic regression on frozen, standardised features.

    Minimises ``CE(W x + b, y) + weight_decay * ||W||^2`` over the whole training set with
    L-BFGS (deterministic, no learning rate to tune). Reports ``linear_top1``.
    """

    def __init__(self, weight_decay: Annotated[float, Ge(0)] = 1e-4, max_iter: Annotated[int, Ge(1)] = 200) -> None:
        self.weight_decay, self.max_iter = weight_decay, max_iter

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        train, train_labels = _labelled(context, "train", "linear-probe")
        test, test_labels = _labelled(context, "test", "linear-probe")
        classifier = fit_linear_probe(train, train_labels, self.weight_decay, self.max_iter)
        with torch.no_grad():
            accuracy = (classifier(test).argmax(dim=1) == test_labels).float().mean().item()
        return {"linear_top1": accuracy}


def knn_scores(train: Tensor, train_labels: Tensor, test: Tensor, k: int, temperature: float) -> Tensor:
    """Class scores ``(M, C)`` for test features ``(M, D)`` from train features ``(N, D)``."""
    num_classes = int(train_labels.max()) + 1
    train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    k = min(k, train.shape[0])
    scores = []
    for chunk in test.split(1024):
        similarity, neighbours = (chunk @ train.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes).scatter_add_(1, train_labels[neighbours], weights)
        scores.append(votes)
    return torch.cat(scores)


def fit_linear_probe(features: Tensor, labels: Tensor, weight_decay: float, max_iter: int) -> torch.nn.Module:
    """A standardising linear classifier fitted with full-batch L-BFGS."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    linear = torch.nn.Linear(features.shape[1], int(labels.max()) + 1)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    x = (features - mean) / std
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), labels) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.nn.Sequential(_Standardize(mean, std), linear).eval()


class FeatureContext(EvalContext):
    """Embeds the evaluation splits once per evaluation and caches the features."""

    def __init__(
        self,
        encoder: Encoder,
        augmentation: Augmentation,
        sources: dict[str, Callable[[], DataSource]],
        device: torch.device,
        batch_size: int = 256,
        autocast_dtype: torch.dtype | None = None,
        log: TextIO | None = None,
    ) -> None:
        self.encoder, self.augmentation, self.device = encoder, augmentation, device
        self._sources, self._batch_size, self._autocast = sources, batch_size, autocast_dtype
        self._log = log
        self._features: dict[str, tuple[Tensor, Tensor | None]] = {}
        self._built: dict[str, DataSource] = {}

    def features(self, role: Literal["train", "test"]) -> tuple[Tensor, Tensor | None]:
        if role not in self._features:
            source = self.source(role)
            with Progress(len(source), "features", stream=self._log, leave=False) as progress:
                features, kept = embed_items(self.encoder, self.augmentation.eval_transform, source, self.device,
                                             self._batch_size, self._autocast, progress, self._skip_unreadable)
            labels = source.labels
            if labels is not None and len(kept) < len(source):  # unreadable items left out (data.on_error: skip)
                labels = labels[torch.tensor(kept, dtype=torch.int64)]
            self._features[role] = (features, labels)
        return self._features[role]

    def _skip_unreadable(self, position: int, error: Exception) -> None:
        """Leave out an item its source reports as skippable (:class:`toolkit.data.UnreadableItem`);
        any other error stops the evaluation."""
        if not isinstance(error, UnreadableItem):
            raise error
        print(f"data: skipped {error}", file=self._log or sys.stderr, flush=True)

    def source(self, role: Literal["train", "test"]) -> DataSource:
        if role not in self._built:
            self._built[role] = self._sources[role]()
        return self._built[role]

    def embed(self, items: Sequence[Any]) -> Tensor:
        with Progress(len(items), "features", stream=self._log, leave=False) as progress:
            features, _ = embed_items(self.encoder, self.augmentation.eval_transform, items, self.device,
                                      self._batch_size, self._autocast, progress)
        return features


@torch.no_grad()
def embed_items(
    encoder: Encoder,
    transform: Callable[[Any], Any],
    items: Sequence[Any],
    device: torch.device,
    batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
    progress: Progress | None = None,
    skip: Callable[[int, Exception], None] | None = None,
) -> tuple[Tensor, list[int]]:
    """Pooled features ``(M, D)`` float32 on the CPU of ``items`` through ``transform`` (an
    evaluation transform), the encoder's collate and the encoder in eval mode, ``batch_size``
    items per forward pass; and the positions ``(M,)`` of the items they belong to.

    An item that cannot be read or transformed (``ValueError``/``OSError``: a corrupt file)
    raises, unless ``skip`` is given: it is then called with the position and the error, and the
    item is left out. Evaluation and ``selfsup embed`` both embed through here, so they agree.
    """
    was_training = encoder.training
    encoder.eval()
    collate = encoder.collate()
    chunks, kept = [], []
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    try:
        for start in range(0, len(items), batch_size):
            positions = range(start, min(start + batch_size, len(items)))
            views, batch_kept = [], []
            for i in positions:
                try:
                    views.append(transform(items[i]))
                except (ValueError, OSError) as error:
                    if skip is None:
                        raise
                    skip(i, error)
                    continue
                batch_kept.append(i)
            if views:
                with autocast:
                    chunks.append(pool(encoder(to_device(collate(views), device))).float().cpu())
                kept += batch_kept
            if progress is not None:
                progress.update(len(positions))
    finally:
        encoder.train(was_training)
    features = torch.cat(chunks) if chunks else torch.empty(0, encoder.output_dim)
    return features, kept


def run_evaluators(
    evaluators: Sequence[Evaluator], context: EvalContext, log: Callable[[str], None] = print
) -> dict[str, float]:
    """The metrics of every evaluator; one the data cannot support (:class:`NotEvaluable`: no
    labels, no test split) is skipped with one line to ``log`` and the others still run."""
    metrics: dict[str, float] = {}
    for evaluator in evaluators:
        try:
            metrics.update(evaluator.evaluate(context))
        except NotEvaluable as reason:
            log(f"skipped: {reason}")
    return metrics


class _Standardize(torch.nn.Module):
    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _labelled(context: EvalContext, role: Literal["train", "test"], name: str) -> tuple[Tensor, Tensor]:
    features, labels = context.features(role)
    if labels is None:
        raise NotEvaluable(f"{name} needs labels and the {role} data has none (an unlabelled layout); label-free "
                           f"evaluators still run")
    return features, labels


def _topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()
