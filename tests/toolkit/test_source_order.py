"""A data source's own epoch order (shard blocks) and unreadable items replaced in place."""

from __future__ import annotations

import pytest
import torch

from toolkit.data import BatchPlan, UnreadableItem, ViewBatches, epoch_loader, shard_order
from toolkit.errors import DataError
from toolkit.interfaces import Augmentation, DataSource, stack_views


class Blocks(DataSource):
    """``n`` numbers in shards of ``shard`` items, ordered by :func:`shard_order`; ``bad`` items
    are unreadable."""

    def __init__(self, n: int, shard: int = 10, window: int = 5, bad: tuple[int, ...] = ()) -> None:
        self.n, self.shard, self.window, self.bad = n, shard, window, set(bad)
        self.labels = torch.arange(n) % 4

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self.bad:
            raise UnreadableItem(f"shard-{index // self.shard}.tar: sample {index:04d}: corrupt")
        return torch.tensor([float(index)])

    def order(self, generator: torch.Generator) -> torch.Tensor:
        counts = [min(self.shard, self.n - s) for s in range(0, self.n, self.shard)]
        return shard_order(counts, generator, self.window)


class Noise(Augmentation):
    def __call__(self, item):
        return [item + torch.rand(1), item + torch.rand(1)]

    def eval_transform(self, item):
        return item


def epoch(source: DataSource, plan: BatchPlan, number: int = 0, start: int = 0) -> list:
    return list(epoch_loader(ViewBatches(source, Noise(), stack_views, plan), number, start, 0, False))


def test_shard_order_is_a_seeded_permutation_that_keeps_each_window_inside_few_shards():
    counts = [10, 10, 10, 7]
    order = shard_order(counts, torch.Generator().manual_seed(1), window=5)
    assert sorted(order.tolist()) == list(range(37))
    assert torch.equal(order, shard_order(counts, torch.Generator().manual_seed(1), window=5))
    assert not torch.equal(order, shard_order(counts, torch.Generator().manual_seed(2), window=5))
    shards = torch.tensor([0] * 10 + [1] * 10 + [2] * 10 + [3] * 7)[order]
    assert all(len(set(shards[i:i + 5].tolist())) <= 2 for i in range(0, 37, 5))


def test_a_window_of_one_reads_each_shard_in_its_stored_order():
    order = shard_order([3, 3], torch.Generator().manual_seed(0), window=1).tolist()
    assert order in ([0, 1, 2, 3, 4, 5], [3, 4, 5, 0, 1, 2])


def test_the_engine_batches_in_the_order_the_source_chooses():
    source, plan = Blocks(40), BatchPlan(40, 8, seed=3)
    expected = source.order(torch.Generator().manual_seed(3 * 1_000_003 + 1))
    seen = torch.cat([batch.index for batch in epoch(source, plan, number=1)])
    assert torch.equal(seen, expected[:40])


def test_a_source_order_of_the_wrong_length_is_a_clear_error():
    class Short(Blocks):
        def order(self, generator):
            return torch.arange(self.n - 1)

    with pytest.raises(ValueError, match="permutation of its 40 indices"):
        BatchPlan(40, 8, seed=0).order(0, Short(40))


def test_two_processes_see_disjoint_items_whose_union_is_the_single_process_epoch():
    source = Blocks(48)
    single = torch.cat([b.index for b in epoch(source, BatchPlan(48, 16, seed=5))])
    ranks = [torch.cat([b.index for b in epoch(source, BatchPlan(48, 16, seed=5, rank=r, world_size=2))])
             for r in range(2)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())
    assert sorted(torch.cat(ranks).tolist()) == sorted(single.tolist())


def test_resuming_mid_epoch_gives_the_same_remaining_batches():
    source, plan = Blocks(40), BatchPlan(40, 8, seed=2)
    full, tail = epoch(source, plan), epoch(source, plan, start=2)
    assert all(torch.equal(a.views[0], b.views[0]) and torch.equal(a.index, b.index) for a, b in zip(full[2:], tail))


def test_an_unreadable_item_is_replaced_by_one_a_batch_later_and_reported():
    plan = BatchPlan(40, 8, seed=4)
    clean = epoch(Blocks(40), plan)
    order = torch.cat([b.index for b in clean])
    bad = int(order[3])
    batches = epoch(Blocks(40, bad=(bad,)), plan)
    first = batches[0]
    assert len(first) == 8 and first.index[3] == order[3 + 8], "the item a whole batch further on takes its place"
    assert first.skipped == [f"shard-{bad // 10}.tar: sample {bad:04d}: corrupt"]
    assert torch.equal(first.labels, Blocks(40).labels[first.index])
    assert all(not b.skipped for b in batches[1:])
    assert all(torch.equal(a.index, b.index) for a, b in zip(clean[1:], batches[1:])), "the other batches are unchanged"


def test_the_replacement_is_the_same_for_every_process_and_micro_batch_split():
    bad = (int(BatchPlan(48, 16, seed=6).order(0, Blocks(48))[5]),)
    single = torch.cat([b.index for b in epoch(Blocks(48, bad=bad), BatchPlan(48, 16, seed=6))])
    split = torch.cat([b.index for r in range(2)
                       for b in epoch(Blocks(48, bad=bad), BatchPlan(48, 16, seed=6, micro_batches=2, rank=r,
                                                                     world_size=2))])
    assert sorted(split.tolist()) == sorted(single.tolist())


def test_data_that_is_mostly_unreadable_stops_the_run():
    plan = BatchPlan(40, 8, seed=0)
    batches = ViewBatches(Blocks(40, bad=tuple(range(40))), Noise(), stack_views, plan)
    failure = batches[(0, 0, 0)]
    assert isinstance(failure.error, DataError) and "could not be read either" in str(failure.error)
