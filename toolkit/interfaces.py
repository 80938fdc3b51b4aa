"""The six component interfaces and the batch that flows between them.

::

    DataSource -item-> Augmentation -views-> collate -Batch-> Objective -loss-> Engine
                                                                  |
                                         Encoder -h-> Projector -z-'

A plugin implements any of these; the engine only ever talks to them through this module.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, Sequence

import torch
from torch import Tensor, nn

View = Any
"""One view of one item as an augmentation makes it: a tensor, a string, a dict of tensors."""


@dataclass
class Batch:
    """A collated batch of ``N`` items, each seen through ``V`` views.

    ``views[v]`` is what the encoder's collate function made of the ``v``-th view of every item:
    a tensor ``(N, ...)`` (images, waveforms, clips) or a dict of tensors (tokenized text).
    ``labels`` is ``(N,)`` int64 when the data source has labels, else ``None``; ``index`` is
    ``(N,)`` int64, the items' positions in the data source (memory banks need it). ``extras``
    carries anything else a collate function adds (padding masks, lengths). ``seeds`` is ``(N,)``
    int64, each item's random seed, keyed by its position in the epoch (the engine sets it): a
    batched augmentation draws its per-item parameters from it (:func:`toolkit.data.seeded_uniforms`),
    so they survive a resume, micro-batching and sharding unchanged. ``skipped`` holds one report
    per unreadable item that another took the place of (:class:`toolkit.data.UnreadableItem`); the
    engine prints them and counts them in the ``data_errors`` metric.
    """

    views: list[Any]
    index: Tensor
    labels: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    seeds: Tensor | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            views=to_device(self.views, device, non_blocking),
            index=to_device(self.index, device, non_blocking),
            labels=to_device(self.labels, device, non_blocking),
            extras=to_device(self.extras, device, non_blocking),
            seeds=to_device(self.seeds, device, non_blocking),
            skipped=self.skipped,
        )


class DataSource(abc.ABC):
    """Raw items of one split: ``source[i]`` is an item (uint8 image ``(C, H, W)``, a string, ...).

    Factories must accept ``split: str``; they may also accept ``limit: int | None`` to take the
    first items only. ``labels`` is an int64 tensor ``(len(source),)`` or ``None`` (unlabelled
    data). A layout without a test split of its own makes ``train`` and ``test`` from one list
    (:func:`toolkit.data.holdout_split`: factories that ask for ``holdout_fraction`` receive
    ``eval.holdout_fraction``) and says so in ``split_note``, which the engine prints.
    """

    labels: Tensor | None = None
    num_classes: int | None = None
    split_note: str | None = None
    device: torch.device | None = None
    """Where a source keeps its items, decoded and stacked, when it holds them as one tensor
    (data that fits in memory): ``source[indices]`` with an int64 tensor ``(N,)`` then gives the
    stacked items ``(N, ...)`` in one indexing operation. ``None`` (the default): items are made
    one by one, in data-loader workers. Items held on an accelerator are batched in the main
    process (workers cannot share its memory); factories receive the training device by asking
    for a ``device`` parameter."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Any: ...

    def order(self, generator: torch.Generator) -> Tensor | None:
        """The order of one epoch: a permutation ``(len(self),)`` int64 of the indices, drawn from
        ``generator`` only (the engine seeds it from the run's seed and the epoch, so the order is
        the same on every process and after a resume). ``None`` (the default): a uniformly random
        permutation. Data stored in shards returns :func:`toolkit.data.shard_order`, which reads
        them nearly in sequence. Batches, micro-batches and processes then take consecutive
        slices of it, as of the default order."""
        return None

    def item_id(self, index: int) -> str:
        """A name for item ``index`` that says where it came from (the ids of ``selfsup embed``,
        the captions of a report): the path of ``self.files[index]`` for a source that lists
        its files in ``files``, else the index. Sources with better names override it."""
        files = getattr(self, "files", None)
        if isinstance(files, Sequence) and len(files) == len(self):
            return str(files[index])
        return str(index)

    def class_name(self, label: int) -> str:
        """The name of class ``label``: from ``classes`` or ``class_names`` when the source lists
        them, else ``class <label>``."""
        for attribute in ("classes", "class_names"):
            names = getattr(self, attribute, None)
            if isinstance(names, Sequence) and 0 <= label < len(names):
                return str(names[label])
        return f"class {label}"


class Augmentation(abc.ABC):
    """Makes ``n_views`` random views of one item; has a deterministic evaluation twin.

    ``__call__`` runs per item on the CPU (in data-loader workers). ``on_device`` runs once per
    batch after the batch reaches the training device: a batched augmentation (the GPU fast path)
    does its work there and keeps ``__call__`` to decoding and cropping.
    """

    n_views: int = 2
    batched: bool = False
    """True when all the random work is in ``on_device`` (drawn from ``Batch.seeds``): ``__call__``
    then draws no random numbers and also takes a stack of items ``(N, ...)``, returning views
    already stacked ``(N, ...)``, so a source that holds its items as one tensor
    (:attr:`DataSource.device`) is batched with one indexing operation instead of ``N``."""

    @abc.abstractmethod
    def __call__(self, item: Any) -> list[View]:
        """``n_views`` random views of ``item``."""

    @abc.abstractmethod
    def eval_transform(self, item: Any) -> View:
        """One deterministic view of ``item`` for evaluation, embedding and export."""

    def on_device(self, batch: Batch) -> Batch:
        """Batched augmentation on the training device; identity by default."""
        return batch


class Encoder(nn.Module):
    """``x -> h``. Declares ``output_dim`` and whether ``h`` is a vector or a sequence.

    - ``output_kind == "vector"``: ``h`` is ``(N, output_dim)``.
    - ``output_kind == "sequence"``: ``h`` is ``(N, T, output_dim)`` (CPC, frame-level models).

    The encoder owns its input preparation: normalisation lives in ``forward``, and ``collate``
    gives the (picklable) function that turns a list of views into the model's input, so a
    recipe never states a tokenizer or a sample rate twice. ``input_spec`` tells data sources
    what the encoder expects (``{"sample_rate": 16000}``); data source factories receive it by
    asking for an ``input_spec`` parameter.
    """

    output_dim: int
    output_kind: Literal["vector", "sequence"] = "vector"
    input_spec: dict[str, Any] = {}

    def collate(self) -> Callable[[Sequence[View]], Any]:
        return stack_views

    native_format: str | None = None
    """Name of a framework-native format this encoder can also be saved in (``huggingface``)."""

    def save_native(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        """Save in ``native_format`` (e.g. ``save_pretrained``); ``selfsup export`` writes it
        to ``<export>/<native_format>/`` next to the safetensors export. ``metadata`` is the
        export's ``encoder.json`` (recipe, step, metrics), for a model card; an override may
        leave the parameter out."""
        raise NotImplementedError(f"{type(self).__name__} declares no native format")


class Projector(nn.Module):
    """``h -> z``; built from the encoder's ``output_dim`` (factories receive ``input_dim``)."""

    output_dim: int


class ObjectiveOutput(NamedTuple):
    loss: Tensor
    """Scalar loss to minimise."""
    metrics: dict[str, Tensor | float]
    """Extra scalars to log (accuracies, temperatures); detached by the engine."""


class Objective(nn.Module):
    """``(batch, encoder, projector) -> loss + metrics``.

    An objective owns whatever only it needs (momentum encoders, queues, predictors, memory
    banks) as submodules, parameters and buffers, so one checkpoint covers every method. Its
    factory may ask by parameter name for ``encoder``, ``projector``, ``dataset_size``,
    ``num_classes`` and ``total_steps``.
    """

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        """Called after every optimizer step (momentum/EMA updates towards ``encoder`` and
        ``projector``); ``step`` is 1-based."""


@dataclass
class RunContext:
    """What lifecycle hooks (:mod:`toolkit.hookspecs`) see of a run; ``step`` and ``epoch`` follow it."""

    recipe: dict[str, Any]
    """The resolved recipe, as plain YAML data."""
    run_dir: Path
    device: torch.device
    encoder: Encoder
    projector: Projector
    objective: Objective
    optimizer: torch.optim.Optimizer
    total_steps: int
    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0


class Evaluator(abc.ABC):
    """Measures an encoder; returns flat metrics like ``{"knn_top1": 0.81}``.

    An evaluator that the data cannot support (no labels, no test split) raises
    :class:`NotEvaluable`; evaluation then skips it with that message and runs the others.
    """

    @abc.abstractmethod
    def evaluate(self, context: EvalContext) -> dict[str, float]: ...


class NotEvaluable(Exception):
    """The data cannot support an evaluator (unlabelled data, no test split); the message says
    which evaluator is skipped and why. :func:`toolkit.evaluation.run_evaluators` catches it."""


class EvalContext(abc.ABC):
    """What an evaluator may use: the encoder, its device, and cached frozen features."""

    encoder: Encoder
    device: torch.device

    @abc.abstractmethod
    def features(self, role: Literal["train", "test"]) -> tuple[Tensor, Tensor | None]:
        """Pooled frozen features ``(N, D)`` float32 on CPU and labels ``(N,)`` (or None)."""

    @abc.abstractmethod
    def source(self, role: Literal["train", "test"]) -> DataSource:
        """The evaluation data source itself, for evaluators that need more than labels."""

    @abc.abstractmethod
    def embed(self, items: Sequence[Any]) -> Tensor:
        """Pooled features ``(len(items), D)`` of raw items through the evaluation transform."""


def stack_views(views: Sequence[View]) -> Tensor:
    """Default collate: stack same-shape tensor views into ``(N, ...)``."""
    return torch.stack(list(views))


def pool(h: Tensor) -> Tensor:
    """One vector per item: ``(N, D)`` stays, ``(N, T, D)`` is averaged over time."""
    return h.mean(dim=1) if h.dim() == 3 else h


def to_device(x: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move tensors, and tensors inside dicts, lists and tuples, to ``device``."""
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, dict):
        return {k: to_device(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device, non_blocking) for v in x)
    return x
