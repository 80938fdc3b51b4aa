"""What the sharded sources share: items addressed by arithmetic over shard sizes, the split and
limit taken from them, the shard-block order, and reports of unreadable samples.

Item ``i`` of a source is position ``g`` of the concatenated shards (``g = i`` when every item
is kept; a held-out split or a ``limit`` keeps an ascending subset), which lies in shard
``s = searchsorted(ends, g)`` at member ``g - starts[s]``: no table of all items, only the
sizes of the shards (and their labels). Every epoch reads the shards in a seeded order with a
seeded shuffle inside windows of ``shuffle_buffer`` items (:func:`toolkit.data.shard_order`),
so batches read a shard or two each, and the engine's position-keyed batches give exact resume
and disjoint process slices as for any source.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from toolkit.data import UnreadableItem, holdout_split, shard_order, subset_indices
from toolkit.errors import DataError
from toolkit.interfaces import DataSource

OnError = Literal["raise", "skip"]
UNREADABLE = (ValueError, OSError, RuntimeError, EOFError, KeyError, IndexError)
"""What decoding a corrupt sample raises (torchvision's and soundfile's errors are RuntimeErrors)."""


class ShardedSource(DataSource):
    """Items in shards of ``counts`` items each, with optional labels ``(sum(counts),)``.

    Subclasses call :meth:`select` in their constructor and read item ``i`` at :meth:`locate`.
    ``shuffle_buffer`` ``None``, or one at least as large as the data, keeps the engine's
    uniformly random order: for sources whose items are all equally cheap to reach (memory-mapped
    tables), and for data small enough to shuffle whole (it then trains exactly as the source it
    was packed from, when packed in its own order).
    """

    def select(self, counts: Sequence[int], labels: Tensor | None, split: str, one_list: bool, limit: int | None,
               holdout_fraction: float, where: str, shuffle_buffer: int | None, on_error: OnError) -> None:
        """Keep the items of ``split`` (a held-out part of one list, or all of them), then ``limit``."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be raise or skip, got {on_error!r}")
        if shuffle_buffer is not None and shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be at least 1 (1: each shard in its stored order), got "
                             f"{shuffle_buffer}")
        self.counts = np.asarray(counts, dtype=np.int64)
        self.ends = np.cumsum(self.counts)
        total = int(self.ends[-1]) if len(self.ends) else 0
        if total == 0:
            raise DataError(f"{where}: holds no samples")
        chosen = torch.arange(total)
        if one_list:
            chosen, self.split_note = holdout_split(total, split, holdout_fraction, labels, where)
        chosen = chosen[subset_indices(len(chosen), limit)]
        self.keep = None if len(chosen) == total else chosen.numpy()
        self.labels = labels[chosen] if labels is not None else None
        self.shuffle_buffer, self.on_error, self.where = shuffle_buffer, on_error, where

    def __len__(self) -> int:
        return int(self.ends[-1]) if self.keep is None else len(self.keep)

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, member)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        position = index if self.keep is None else int(self.keep[index])
        shard = int(np.searchsorted(self.ends, position, side="right"))
        return shard, position - int(self.ends[shard] - self.counts[shard])

    def order(self, generator: torch.Generator) -> Tensor | None:
        if self.shuffle_buffer is None or self.shuffle_buffer >= len(self):
            return None  # the engine's uniform shuffle, the order the source would have unpacked
        counts = self.counts if self.keep is None else np.bincount(
            np.searchsorted(self.ends, self.keep, side="right"), minlength=len(self.counts))
        return shard_order(torch.from_numpy(counts), generator, self.shuffle_buffer)

    def unreadable(self, where: str, reason: BaseException | str) -> DataError:
        """The error for a sample that cannot be read: :class:`UnreadableItem` (skipped, counted)
        with ``on_error: skip``, else a :class:`DataError` that says how to skip such samples."""
        message = f"{where}: cannot read this sample ({reason})"
        if self.on_error == "skip":
            return UnreadableItem(message)
        return DataError(f"{message}; remove it from the data, or set data.on_error: skip to train on without it "
                         f"(each one is reported and counted in the data_errors metric)")


def label_classes(labels: Tensor | None, classes: Sequence[str] | None,
                  num_classes: int | None) -> tuple[int | None, list[str] | None]:
    """``(num_classes, class_names)`` from what the data says (names, a count) or the labels."""
    if labels is None:
        return None, None
    names = list(classes) if classes else None
    count = len(names) if names else num_classes or (int(labels.max()) + 1 if len(labels) else 0)
    return count, names
