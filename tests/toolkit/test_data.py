"""Deterministic batching: orders, item seeds, workers, micro-batches."""

from __future__ import annotations

import pytest
import torch

from toolkit.data import BatchPlan, ViewBatches, epoch_loader, item_seed, seeded_uniforms, subset_indices
from toolkit.interfaces import Augmentation, DataSource, stack_views


class Numbers(DataSource):
    def __init__(self, n: int) -> None:
        self.labels = torch.arange(n) % 3
        self.num_classes = 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index)])


class Jitter(Augmentation):
    n_views = 2

    def __call__(self, item):
        return [item + torch.rand(1) for _ in range(self.n_views)]

    def eval_transform(self, item):
        return item


def batches(plan: BatchPlan) -> ViewBatches:
    return ViewBatches(Numbers(plan.dataset_size), Jitter(), stack_views, plan)


def test_each_epoch_visits_every_item_once_in_a_seeded_order():
    plan = BatchPlan(dataset_size=10, batch_size=5, seed=0)
    assert sorted(plan.order(0).tolist()) == list(range(10))
    assert torch.equal(plan.order(1), BatchPlan(10, 5, seed=0).order(1))
    assert not torch.equal(plan.order(0), plan.order(1))


def test_last_partial_batch_is_dropped():
    assert BatchPlan(dataset_size=10, batch_size=4, seed=0).steps_per_epoch == 2


def test_a_batch_larger_than_the_data_is_a_clear_error():
    with pytest.raises(ValueError, match="lower trainer.batch_size"):
        BatchPlan(dataset_size=3, batch_size=4, seed=0)


def test_batch_size_must_divide_into_micro_batches():
    with pytest.raises(ValueError, match="divisible"):
        BatchPlan(dataset_size=12, batch_size=6, seed=0, micro_batches=4)


def test_views_depend_only_on_epoch_and_position_not_on_workers():
    plan = BatchPlan(dataset_size=12, batch_size=4, seed=7)
    in_process = [b.views[0] for b in epoch_loader(batches(plan), 1, 0, num_workers=0, pin_memory=False)]
    with_workers = [b.views[0] for b in epoch_loader(batches(plan), 1, 0, num_workers=2, pin_memory=False)]
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_workers))


def test_starting_mid_epoch_yields_the_remaining_batches_unchanged():
    plan = BatchPlan(dataset_size=12, batch_size=4, seed=7)
    full = [b.views[1] for b in epoch_loader(batches(plan), 0, 0, 0, False)]
    tail = [b.views[1] for b in epoch_loader(batches(plan), 0, 1, 0, False)]
    assert len(tail) == 2 and all(torch.equal(a, b) for a, b in zip(full[1:], tail))


def test_micro_batches_partition_the_step_batch_with_the_same_views():
    whole = BatchPlan(dataset_size=12, batch_size=4, seed=7)
    split = BatchPlan(dataset_size=12, batch_size=4, seed=7, micro_batches=2)
    first_step = next(iter(epoch_loader(batches(whole), 0, 0, 0, False)))
    halves = list(epoch_loader(batches(split), 0, 0, 0, False))[:2]
    assert torch.equal(torch.cat([h.views[0] for h in halves]), first_step.views[0])
    assert torch.equal(torch.cat([h.index for h in halves]), first_step.index)


def test_batches_carry_labels_and_dataset_indices():
    plan = BatchPlan(dataset_size=12, batch_size=4, seed=0)
    batch = next(iter(epoch_loader(batches(plan), 0, 0, 0, False)))
    assert torch.equal(batch.labels, batch.index % 3)
    assert torch.equal(batch.views[0][:, 0].floor(), batch.index.float())


def test_augmentation_randomness_does_not_disturb_the_training_generator():
    plan = BatchPlan(dataset_size=8, batch_size=4, seed=0)
    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    list(epoch_loader(batches(plan), 0, 0, 0, False))
    assert torch.equal(torch.rand(1), expected)


def test_subset_indices_are_sorted_fixed_and_bounded():
    assert torch.equal(subset_indices(5, None), torch.arange(5))
    chosen = subset_indices(100, 10)
    assert len(chosen) == 10 and torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, subset_indices(100, 10))


def test_processes_take_disjoint_slices_that_concatenate_to_the_global_batch():
    single = BatchPlan(dataset_size=24, batch_size=8, seed=3)
    ranks = [BatchPlan(dataset_size=24, batch_size=8, seed=3, rank=r, world_size=2) for r in range(2)]
    whole = next(iter(epoch_loader(batches(single), 0, 1, 0, False)))
    shards = [next(iter(epoch_loader(batches(plan), 0, 1, 0, False))) for plan in ranks]
    assert torch.equal(torch.cat([s.index for s in shards]), whole.index)
    assert torch.equal(torch.cat([s.views[0] for s in shards]), whole.views[0])


def test_global_batch_must_split_evenly_over_processes():
    with pytest.raises(ValueError, match="number of processes"):
        BatchPlan(dataset_size=24, batch_size=6, seed=0, world_size=4)


def test_seeded_uniforms_are_uniform_and_a_function_of_seed_stream_and_counter_only():
    seeds = torch.tensor([item_seed(0, 0, position) for position in range(2000)])
    u = seeded_uniforms(seeds, 0, 8)
    assert u.shape == (2000, 8) and u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert abs(torch.corrcoef(u.T)[0, 1].item()) < 0.1, "numbers of one item are not correlated"
    assert torch.equal(seeded_uniforms(seeds[5:9], 0, 8), u[5:9]), "an item's numbers do not depend on its batch"
    assert torch.equal(seeded_uniforms(seeds, 0, 4), u[:, :4])
    assert not torch.equal(seeded_uniforms(seeds, 1, 8), u), "streams differ"


def test_batches_carry_the_items_position_keyed_seeds():
    plan = BatchPlan(dataset_size=32, batch_size=8, seed=4, micro_batches=2)
    batch = ViewBatches(Numbers(32), Jitter(), stack_views, plan)[(2, 1, 1)]
    positions = plan.positions(1, 1)
    assert batch.seeds.tolist() == [item_seed(4, 2, position) for position in positions]
