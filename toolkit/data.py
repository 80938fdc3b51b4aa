"""Deterministic batching: which items each step sees, and the random views made of them.

Each epoch visits a seeded permutation of the data source. Step ``b`` of epoch ``e`` takes items
``perm_e[b * B:(b + 1) * B]`` (the last partial batch is dropped so every step has ``B`` items).
Each item's augmentation draws from a generator seeded by ``(seed, epoch, position)``, so the
same step produces the same views whatever the number of workers, the micro-batching, or a
resume in between: the data position ``(epoch, step)`` is all a checkpoint needs to store.
A batch carries those seeds (``Batch.seeds``), so a batched augmentation on the training device
draws from the same keys (:func:`seeded_uniforms`).

A source that holds its items as one tensor (``DataSource.device``) paired with a batched
augmentation is batched with one indexing operation per micro-batch; held on an accelerator, its
batches are made in the main process, with no loader workers and no host-to-device copy.

A source may choose each epoch's order itself (:meth:`DataSource.order`): data in shards reads
nearly in sequence with :func:`shard_order`, and keeps the exact resume, micro-batching and
process split above, which only ever see positions. An item a source reports as
:class:`UnreadableItem` is replaced by a readable one a whole batch further on in the order
(:meth:`ViewBatches.item`), and named in the batch's ``skipped`` reports.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from toolkit.errors import DataError
from toolkit.interfaces import Augmentation, Batch, DataSource, NotEvaluable, stack_views


@dataclass(frozen=True)
class BatchPlan:
    """Which dataset indices make up step ``step`` of epoch ``epoch``.

    ``batch_size`` is global, per optimizer step. With ``world_size`` processes, process
    ``rank`` takes the ``rank``-th of ``world_size`` equal slices of every step (no overlap, the
    same items and views as one process would see); ``micro_batches`` splits each slice for
    gradient accumulation.
    """

    dataset_size: int
    batch_size: int
    seed: int
    micro_batches: int = 1
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size % (self.micro_batches * self.world_size):
            raise ValueError(
                f"trainer.batch_size ({self.batch_size}) must be divisible by trainer.accumulate_grad_batches "
                f"({self.micro_batches}) times the number of processes ({self.world_size})"
            )
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the data source has {self.dataset_size} items, fewer than one batch of {self.batch_size}: "
                f"lower trainer.batch_size"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset_size // self.batch_size

    @property
    def micro_batch_size(self) -> int:
        """Items per forward pass on one process."""
        return self.batch_size // (self.micro_batches * self.world_size)

    def order(self, epoch: int, source: DataSource | None = None) -> torch.Tensor:
        """The permutation ``(dataset_size,)`` int64 of epoch ``epoch``: the one ``source`` chooses
        (:meth:`DataSource.order`) from a generator seeded by the run's seed and the epoch, or a
        uniformly random one drawn from that generator."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        chosen = source.order(generator) if source is not None else None
        if chosen is None:
            return torch.randperm(self.dataset_size, generator=generator)
        if chosen.shape != (self.dataset_size,) or chosen.dtype != torch.int64:
            raise ValueError(f"{type(source).__name__}.order gave {chosen.dtype} {tuple(chosen.shape)}; a data "
                             f"source's order must be a permutation of its {self.dataset_size} indices, int64")
        return chosen

    def positions(self, step: int, micro: int) -> range:
        """Positions within the epoch's order covered by this process's micro-batch ``micro``."""
        start = step * self.batch_size + (self.rank * self.micro_batches + micro) * self.micro_batch_size
        return range(start, start + self.micro_batch_size)


class ViewBatches(Dataset):
    """A dataset of whole micro-batches, keyed by ``(epoch, step, micro)``."""

    def __init__(
        self,
        source: DataSource,
        augmentation: Augmentation,
        collate: Callable[[Sequence[Any]], Any],
        plan: BatchPlan,
    ) -> None:
        self.source, self.augmentation, self.collate, self.plan = source, augmentation, collate, plan
        self._orders: dict[int, torch.Tensor] = {}
        # one indexing operation gives what N calls and the (default, stacking) collate would
        self._stacked = source.device is not None and augmentation.batched and collate is stack_views

    def __len__(self) -> int:
        return self.plan.steps_per_epoch * self.plan.micro_batches

    def __getitem__(self, key: tuple[int, int, int]) -> Batch | BatchFailure:
        try:
            return self._batch(*key)
        except (ValueError, OSError) as error:  # bad data: the main process raises it with its own message
            return BatchFailure(error)

    def _batch(self, epoch: int, step: int, micro: int) -> Batch:
        order = self._order(epoch)
        positions = self.plan.positions(step, micro)
        indices = order[positions.start:positions.stop]
        seeds = [item_seed(self.plan.seed, epoch, position) for position in positions]
        if self._stacked:
            views = self.augmentation(self.source[indices.to(self.source.device)])
            labels = self.source.labels
            return Batch(views=list(views), index=indices.clone(), labels=labels[indices] if labels is not None else None,
                         seeds=torch.tensor(seeds))
        item_views, used, skipped = [], [], []
        with torch.random.fork_rng(devices=[]):
            for seed, position, index in zip(seeds, positions, indices.tolist()):
                # the CPU generator only: torch.manual_seed also reseeds CUDA, 50x slower per item
                torch.default_generator.manual_seed(seed)
                item, index, report = self.item(order, position, index)
                item_views.append(self.augmentation(item))
                used.append(index)
                if report is not None:
                    skipped.append(report)
        batch = collate_views(item_views, torch.tensor(used, dtype=torch.int64), self.source.labels, self.collate,
                              torch.tensor(seeds))
        batch.skipped = skipped
        return batch

    def item(self, order: torch.Tensor, position: int, index: int) -> tuple[Any, int, str | None]:
        """``(item, index, None)`` for the item ``index`` at ``position`` of the epoch's ``order``.

        When the source reports it as :class:`UnreadableItem`, the first readable item at
        ``position + k * batch_size`` (``k = 1, 2, ...``) takes its place: ``(item, its index,
        the report)``. Replacing, not dropping, keeps every micro-batch at its planned size (equal
        slices for the processes' gathers, queues sized in batches); the replacement lies outside
        the step's batch (with two batches of data or more), so no batch holds an item twice, and
        it depends only on the order, so every worker, process and resume picks the same one. An unreadable replacement is passed
        over silently: it is reported at its own position."""
        try:
            return self.source[index], index, None
        except UnreadableItem as error:
            report = str(error)
        for k in range(1, REPLACEMENT_TRIES + 1):
            candidate = int(order[(position + k * self.plan.batch_size) % len(order)])
            try:
                return self.source[candidate], candidate, report
            except UnreadableItem:
                continue
        raise DataError(f"{report}; the {REPLACEMENT_TRIES} items tried in its place could not be read either: the "
                        f"data is mostly unreadable, check it (or re-create it) before training")

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            self._orders = {epoch: self.plan.order(epoch, self.source)}
        return self._orders[epoch]


REPLACEMENT_TRIES = 16
"""How far :meth:`ViewBatches.item` looks for a readable item before the run stops."""


class UnreadableItem(DataError):
    """An item that cannot be read (a corrupt image, truncated audio) and that the recipe lets the
    run skip (``data.on_error: skip``); the message names it (file, shard, key) and why.

    A data source raises it only when its recipe allows skipping, a plain :class:`DataError`
    otherwise. Training replaces the item (:meth:`ViewBatches.item`), reports it and counts it
    in the ``data_errors`` metric."""


@dataclass
class BatchFailure:
    """A micro-batch that could not be made (a corrupt file, say). Returned rather than raised, so
    that a data-loader worker hands the error to the main process unchanged; a worker's raised
    exception would come back rewrapped as "Caught ValueError in DataLoader worker process 0"."""

    error: Exception


class EpochKeys(Sampler):
    """The keys of one epoch from ``start_step`` on."""

    def __init__(self, plan: BatchPlan, epoch: int, start_step: int) -> None:
        self.plan, self.epoch, self.start_step = plan, epoch, start_step

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for step in range(self.start_step, self.plan.steps_per_epoch):
            for micro in range(self.plan.micro_batches):
                yield (self.epoch, step, micro)

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start_step) * self.plan.micro_batches


def epoch_loader(
    batches: ViewBatches, epoch: int, start_step: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """Micro-batches of one epoch, in order, from ``start_step``; in the main process when the
    source holds its items on an accelerator."""
    device = batches.source.device
    if device is not None and device.type != "cpu":
        num_workers, pin_memory = 0, False
    return DataLoader(
        batches,
        batch_size=None,
        sampler=EpochKeys(batches.plan, epoch, start_step),
        num_workers=num_workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        worker_init_fn=_leave_signals_to_the_main_process,
        prefetch_factor=4 if num_workers else None,
        # its own generator: a DataLoader otherwise draws worker seeds from the global one,
        # and a resumed run (which creates one loader more) would then drift from a straight run
        generator=torch.Generator().manual_seed(batches.plan.seed + epoch),
    )


def collate_views(
    item_views: Sequence[Sequence[Any]],
    indices: torch.Tensor,
    labels: torch.Tensor | None,
    collate: Callable[[Sequence[Any]], Any],
    seeds: torch.Tensor | None = None,
) -> Batch:
    """``item_views[i][v]`` (item ``i``, view ``v``) -> a :class:`Batch` with one entry per view."""
    n_views = len(item_views[0])
    views = [collate([views[v] for views in item_views]) for v in range(n_views)]
    return Batch(views=views, index=indices.clone(), labels=labels[indices] if labels is not None else None,
                 seeds=seeds)


def shard_order(counts: Sequence[int] | torch.Tensor, generator: torch.Generator, window: int) -> torch.Tensor:
    """A permutation ``(sum(counts),)`` int64 of items stored in shards, that reads them nearly in
    sequence: shard ``s`` holds the consecutive indices ``sum(counts[:s]) .. sum(counts[:s + 1]) - 1``;
    the shards come in a seeded random order, and the items of each run of ``window`` consecutive
    positions are shuffled among themselves (a seeded shuffle buffer; ``window <= 1`` keeps each
    shard's own order, ``window >= sum(counts)`` shuffles everything).

    A batch then reads from the one or two shards its window spans, so a data-loader worker opens
    few files per batch and reads each mostly forward. What :meth:`DataSource.order` returns.
    """
    counts = torch.as_tensor(counts, dtype=torch.int64)
    starts = torch.cumsum(counts, 0) - counts
    shards = torch.randperm(len(counts), generator=generator)
    counts, starts = counts[shards], starts[shards]
    total = int(counts.sum())
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)  # position of each item's shard block
    order = torch.repeat_interleave(starts, counts) + torch.arange(total) - first
    if window > 1 and total > 1:
        keys = (torch.arange(total) // window).double() + torch.rand(total, generator=generator, dtype=torch.float64)
        order = order[torch.argsort(keys)]
    return order


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A distinct 63-bit seed per (run seed, epoch, position in epoch)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB)
    return mixed % (2**63 - 1)


def seeded_uniforms(seeds: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """``(N, count)`` float32 uniform on ``[0, 1)``: numbers ``0 .. count - 1`` of stream ``stream``
    of each item's seed ``seeds: (N,)`` int64 (``stream < 2**16``, ``count <= 2**16``).

    Counter-based: number ``k`` is splitmix64 (Steele et al. 2014) of the mixed seed plus
    ``(stream * 2**16 + k + 1)`` times the golden-ratio increment, top 24 bits. Computed in
    int64 (wrapping like uint64) on the seeds' device: no generator state, no host round trip,
    and an item's numbers do not depend on the batch, micro-batch or process it lands in.
    """
    counters = stream * 2**16 + torch.arange(1, count + 1, device=seeds.device)
    bits = _splitmix64(_splitmix64(seeds)[:, None] + counters * _GOLDEN)
    return ((bits >> 40) & 0xFFFFFF).to(torch.float32) * 2.0**-24


_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
"""The splitmix64 increment as an int64 (two's complement of the uint64 constant)."""


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors; masked shifts make ``>>`` logical, as on uint64."""
    z = z + _GOLDEN
    z = (z ^ ((z >> 30) & (2**34 - 1))) * (0xBF58476D1CE4E5B9 - 2**64)
    z = (z ^ ((z >> 27) & (2**37 - 1))) * (0x94D049BB133111EB - 2**64)
    return z ^ ((z >> 31) & (2**33 - 1))


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """Ctrl-C (and a SIGTERM sent to the process group) reach the workers too; the main process
    finishes its step and stops them, so they ignore both. A worker still exits with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _identity(batch: Batch) -> Batch:
    return batch


def subset_indices(size: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    """All ``size`` indices, or a fixed random subset of ``limit`` of them in ascending order.

    Data sources use this for their ``limit`` parameter, so that a limited split keeps the
    class balance of the full one even when the file is sorted by class.
    """
    if limit is None or limit >= size:
        return torch.arange(size)
    if limit < 1:
        raise ValueError(f"data.limit must be positive, got {limit}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=generator)[:limit].sort().values


class NoTestSplit(NotEvaluable, DataError):
    """The data has no test split and ``eval.holdout_fraction`` is 0, so none is held out."""


HOLDOUT_SEED = 0
"""The held-out items depend on the data only, never on ``trainer.seed``: runs stay comparable."""


def holdout_split(
    size: int, split: str, fraction: float, labels: torch.Tensor | None = None, where: str = "the data"
) -> tuple[torch.Tensor, str]:
    """Indices ``(M,)`` (ascending) of ``split`` in one list of ``size`` items that has no splits
    of its own, and a sentence saying where the split came from (the engine prints it).

    ``test`` is a seeded random ``fraction`` of the items, drawn per class when ``labels (size,)``
    are given (every class with two items or more keeps at least one on each side); ``train`` is
    the rest; ``all`` is every item. With ``fraction`` 0 nothing is held out: ``train`` is every
    item and ``test`` raises :class:`NoTestSplit`, so that evaluation skips what needs it
    instead of measuring on the training items.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"eval.holdout_fraction must be in [0, 1), got {fraction}")
    if split not in ("train", "test", "all"):
        raise DataError(f"{where} has no split named {split!r}: it is one list of items, split into train and "
                         f"test (a held-out eval.holdout_fraction) or taken whole with split: all")
    if split == "all":
        return torch.arange(size), f"{where}: every one of its {size} items (split: all)"
    if fraction == 0:
        if split == "test":
            raise NoTestSplit(f"{where} has no test split and eval.holdout_fraction is 0, so there is nothing to "
                              f"evaluate on; set eval.holdout_fraction (e.g. 0.1) or point eval.test_data at test data")
        return torch.arange(size), (f"{where} has no test split and eval.holdout_fraction is 0: training on all "
                                    f"{size} items; evaluators that need a test split are skipped")
    held = _held_out(size, fraction, labels)
    chosen = held if split == "test" else ~held
    note = (f"{where} has no test split: evaluating on a seeded held-out {fraction:g} of it "
            f"({int(held.sum())} of {size} items, eval.holdout_fraction), training on the other {int((~held).sum())}")
    return chosen.nonzero().flatten(), note


def split_folder(root: Path, split: str) -> tuple[Path, bool]:
    """The folder that holds ``split`` in a folder layout, and whether it is one list to split
    with :func:`holdout_split` (``True``) or the split's own folder (``False``).

    A layout with a ``test/`` folder has its splits: ``root/<split>/``. Otherwise its items
    are one list, ``root/train/`` if that exists, else ``root`` itself, and ``train``,
    ``test`` and ``all`` are taken from it. Any other ``split`` names a folder
    (``train-clean-100``).
    """
    if split not in ("train", "test", "all") or (root / "test").is_dir():
        if not (root / split).is_dir():
            folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise DataError(f"{root}: no {split}/ folder for data.split {split!r} (folders there: "
                                    f"{', '.join(folders) or 'none'})")
        return root / split, False
    return (root / "train" if (root / "train").is_dir() else root), True


def _held_out(size: int, fraction: float, labels: torch.Tensor | None) -> torch.Tensor:
    """A boolean mask ``(size,)`` of the held-out items, per class when labels are given."""
    generator = torch.Generator().manual_seed(HOLDOUT_SEED)
    groups = [torch.arange(size)] if labels is None else [
        (labels == c).nonzero().flatten() for c in labels.unique()]
    held = torch.zeros(size, dtype=torch.bool)
    for group in groups:
        count = round(fraction * len(group))
        if len(group) >= 2:
            count = min(max(count, 1), len(group) - 1)
        held[group[torch.randperm(len(group), generator=generator)[:count]]] = True
    if not held.any() and size >= 2:  # tiny data: still never evaluate on training items
        held[torch.randint(size, (1,), generator=generator)] = True
    return held
