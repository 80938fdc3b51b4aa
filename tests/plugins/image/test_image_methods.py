"""MoCo v2, BYOL, SimSiam, SupCon and InstDisc objectives, their EMA targets, queue, memory bank
and multi-crop, each against a naive loop or the paper's formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.byol import BYOL
from selfsup_image.encoders import ResNet18
from selfsup_image.instdisc import InstDisc
from selfsup_image.moco import MoCo
from toolkit.momentum import MomentumTarget, cosine_momentum, ema_update
from selfsup_image.simclr import NTXent
from toolkit.memory import KeyQueue
from selfsup_image.simsiam import SimSiam
from selfsup_image.supcon import SupCon
from toolkit.views import prediction_pairs
from toolkit.interfaces import Batch
from toolkit.losses import info_nce
from toolkit.optim import parameter_groups
from toolkit.projectors import MLPProjector
from toolkit.testing import check_objective


def tiny_networks(seed: int = 0, output_dim: int = 8) -> tuple[ResNet18, MLPProjector]:
    torch.manual_seed(seed)
    encoder = ResNet18(stem="cifar", width=4)
    return encoder, MLPProjector(encoder.output_dim, hidden_dim=16, output_dim=output_dim)


def two_view_batch(n: int = 6, views: int = 2, labels: torch.Tensor | None = None) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(views=[torch.rand(n, 3, 16, 16, generator=g) for _ in range(views)], index=torch.arange(n),
                 labels=labels)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b) / (float(a.norm()) * float(b.norm()))


# --- EMA targets --------------------------------------------------------------------------------

def test_ema_update_moves_each_parameter_to_m_target_plus_one_minus_m_online():
    target, online = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * t.detach() + 0.1 * o.detach() for t, o in zip(target.parameters(), online.parameters())]
    ema_update(target, online, momentum=0.9)
    assert all(torch.allclose(t, e, atol=1e-7) for t, e in zip(target.parameters(), expected))


def test_cosine_momentum_starts_at_base_and_ends_at_one():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)


def test_target_update_records_the_scheduled_momentum():
    encoder, projector = tiny_networks()
    target = MomentumTarget(encoder, projector, 0.9, schedule="cosine")
    target.update(encoder, projector, step=6, total_steps=10)
    assert float(target.momentum) == pytest.approx(1 - 0.1 * (math.cos(math.pi * 5 / 10) + 1) / 2)


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_no_gradient_reaches_the_momentum_target(method):
    encoder, projector = tiny_networks()
    objective = (MoCo(encoder, projector, dataset_size=64, queue_size=16, bn_groups=2) if method == "moco"
                 else BYOL(encoder, projector, predictor_hidden_dim=16))
    objective(two_view_batch(), encoder, projector).loss.backward()
    target_params = list(objective.target.parameters())
    assert all(not p.requires_grad and p.grad is None for p in target_params)
    assert encoder.net.conv1.weight.grad is not None
    trained = {id(p) for group in parameter_groups([encoder, projector, objective]) for p in group["params"]}
    assert not trained & {id(p) for p in target_params}


# --- MoCo ---------------------------------------------------------------------------------------

def test_queue_is_fifo_and_wraps_around():
    queue = KeyQueue(size=5, dim=1)
    queue.enqueue(torch.tensor([[1.0], [2.0], [3.0]]))
    queue.enqueue(torch.tensor([[4.0], [5.0], [6.0]]))
    assert queue.keys.flatten().tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    assert int(queue.pointer) == 1
    assert queue.oldest_first().flatten().tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_a_batch_larger_than_the_queue_keeps_its_newest_keys():
    queue = KeyQueue(size=3, dim=1)
    queue.enqueue(torch.arange(7.0)[:, None])
    assert queue.oldest_first().flatten().tolist() == [4.0, 5.0, 6.0]


def test_moco_loss_matches_the_naive_loop_and_enqueues_the_normalised_keys():
    encoder, projector = tiny_networks()
    objective = MoCo(encoder, projector, dataset_size=64, temperature=0.2, queue_size=10, bn_groups=1)
    batch = two_view_batch()
    queue = objective.queue.keys.clone()
    q = projector(encoder(batch.views[0])).detach()
    k = objective.target(batch.views[1])
    loss = objective(batch, encoder, projector).loss
    naive = 0.0
    for i in range(len(q)):
        positive = math.exp(cos(q[i], k[i]) / 0.2)
        naive += -math.log(positive / (positive + sum(math.exp(cos(q[i], key) / 0.2) for key in queue)))
    assert loss.item() == pytest.approx(naive / len(q), rel=1e-4)
    assert torch.allclose(objective.queue.keys[:6], F.normalize(k, dim=1), atol=1e-6)


def test_moco_queue_is_clipped_to_the_data_set_size():
    encoder, projector = tiny_networks()
    assert len(MoCo(encoder, projector, dataset_size=300).queue) == 300


def test_shuffle_bn_encodes_keys_in_shuffled_groups_and_returns_them_in_batch_order():
    encoder, projector = tiny_networks()
    objective = MoCo(encoder, projector, dataset_size=64, bn_groups=2)
    x = two_view_batch(n=8).views[0]
    torch.manual_seed(3)
    order = torch.randperm(8)
    torch.manual_seed(3)
    keys = objective._global_keys(x)
    for group in order.chunk(2):  # each key was normalised with the statistics of its shuffled group
        assert torch.allclose(keys[group], objective.target(x[group]), atol=1e-5)
    assert not torch.allclose(keys, objective.target(x), atol=1e-3)


def test_moco_symmetric_loss_adds_both_directions_and_enqueues_both_keys():
    encoder, projector = tiny_networks()
    objective = MoCo(encoder, projector, dataset_size=64, queue_size=32, symmetric=True, bn_groups=1)
    batch = two_view_batch()
    queue = objective.queue.keys.clone()
    q = [projector(encoder(x)).detach() for x in batch.views]
    k = [objective.target(x) for x in batch.views]
    expected = sum(info_nce(q[a], k[b], 0.2, negatives=queue, in_batch=False)[0] for a, b in ((0, 1), (1, 0)))
    assert torch.allclose(objective(batch, encoder, projector).loss, expected, atol=1e-5)
    assert int(objective.queue.pointer) == 12


# --- BYOL and SimSiam ---------------------------------------------------------------------------

def test_byol_loss_is_the_symmetrised_two_minus_two_cosine():
    encoder, projector = tiny_networks()
    objective = BYOL(encoder, projector, predictor_hidden_dim=16)
    batch = two_view_batch()
    p = objective.predictor(projector(encoder(torch.cat(batch.views)))).detach().chunk(2)
    z = objective.target(torch.cat(batch.views)).chunk(2)
    loss = objective(batch, encoder, projector).loss
    naive = sum((2 - 2 * cos(p[a][i], z[b][i])) / len(p[a]) for a, b in ((0, 1), (1, 0)) for i in range(len(p[a])))
    assert loss.item() == pytest.approx(naive, rel=1e-4)


def test_byol_tau_follows_the_cosine_schedule_to_one():
    encoder, projector = tiny_networks()
    objective = BYOL(encoder, projector, base_tau=0.99)
    taus = []
    for step in range(1, 11):
        objective.after_step(step, 10, encoder, projector)
        taus.append(float(objective.target.momentum))
    assert taus[0] == pytest.approx(0.99) and taus == sorted(taus)
    assert taus[-1] == pytest.approx(cosine_momentum(0.99, 9, 10)) and taus[-1] > 0.9997


def test_simsiam_loss_is_the_mean_negative_cosine_with_a_stop_gradient():
    encoder, projector = tiny_networks()
    objective = SimSiam(projector, predictor_hidden_dim=4)
    batch = two_view_batch()
    z = projector(encoder(torch.cat(batch.views))).chunk(2)
    p = objective.predictor(torch.cat(z)).chunk(2)
    loss = objective(batch, encoder, projector).loss
    naive = sum(-cos(p[a][i].detach(), z[b][i].detach()) / (2 * len(z[a])) for a, b in ((0, 1), (1, 0))
                for i in range(len(z[a])))
    assert loss.item() == pytest.approx(naive, rel=1e-4)
    with_stop = sum(F.cosine_similarity(p[a], z[b].detach()).mean() for a, b in ((0, 1), (1, 0)))
    expected_grad = torch.autograd.grad(-with_stop / 2, projector.net[0].weight)[0]
    assert torch.allclose(torch.autograd.grad(loss, projector.net[0].weight)[0], expected_grad, atol=1e-6)


def test_multi_crop_views_predict_each_global_view_but_themselves():
    assert prediction_pairs(4) == [(0, 1), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]


# --- SupCon -------------------------------------------------------------------------------------

def test_supcon_with_all_distinct_labels_equals_the_self_supervised_loss():
    encoder, projector = tiny_networks()
    batch = two_view_batch(labels=torch.arange(6))
    supervised = SupCon(temperature=0.1)(batch, encoder, projector).loss
    assert torch.allclose(supervised, NTXent(temperature=0.1)(batch, encoder, projector).loss, atol=1e-6)


def test_supcon_matches_the_naive_loop_with_shared_labels_and_three_views():
    encoder, projector = tiny_networks()
    labels = torch.tensor([0, 1, 0, 2, 1])
    batch = two_view_batch(n=5, views=3, labels=labels)
    z = projector(encoder(torch.cat(batch.views))).detach()
    rows = labels.repeat(3)
    naive = 0.0
    for a in range(len(z)):
        others = [b for b in range(len(z)) if b != a]
        denominator = sum(math.exp(cos(z[a], z[b]) / 0.1) for b in others)
        positives = [p for p in others if rows[p] == rows[a]]
        naive += sum(-math.log(math.exp(cos(z[a], z[p]) / 0.1) / denominator) for p in positives) / len(positives)
    assert SupCon(temperature=0.1)(batch, encoder, projector).loss.item() == pytest.approx(naive / len(z), rel=1e-4)


def test_supcon_without_labels_says_what_to_use():
    encoder, projector = tiny_networks()
    with pytest.raises(ValueError, match="needs labels"):
        SupCon()(two_view_batch(), encoder, projector)


# --- InstDisc -----------------------------------------------------------------------------------

def test_instdisc_loss_matches_the_naive_loop_and_updates_the_bank_with_momentum():
    encoder, projector = tiny_networks()
    objective = InstDisc(projector, dataset_size=20, temperature=0.1, num_negatives=7, bank_momentum=0.5)
    batch = Batch(views=two_view_batch().views[:1], index=torch.tensor([3, 8, 0, 19, 5, 11]))
    bank = objective.bank.vectors.clone()
    f = projector(encoder(batch.views[0])).detach()
    torch.manual_seed(5)
    loss = objective(batch, encoder, projector).loss
    torch.manual_seed(5)
    sampled = torch.randint(20, (7,))
    naive = 0.0
    for row, item in enumerate(batch.index.tolist()):
        positive = math.exp(cos(f[row], bank[item]) / 0.1)
        naive += -math.log(positive / (positive + sum(math.exp(cos(f[row], bank[j]) / 0.1) for j in sampled)))
    assert loss.item() == pytest.approx(naive / len(f), rel=1e-4)
    expected = F.normalize(0.5 * bank[batch.index] + 0.5 * F.normalize(f, dim=1), dim=1)
    assert torch.allclose(objective.bank.vectors[batch.index], expected, atol=1e-6)
    untouched = torch.ones(20, dtype=torch.bool).index_fill_(0, batch.index, False)
    assert torch.equal(objective.bank.vectors[untouched], bank[untouched])


def test_the_memory_bank_is_in_the_state_dict():
    encoder, projector = tiny_networks()
    assert InstDisc(projector, dataset_size=50).state_dict()["bank.vectors"].shape == (50, 8)


# --- multi-crop ---------------------------------------------------------------------------------

def test_multi_crop_adds_local_views_after_the_global_ones():
    augmentation = SimCLRAugmentation(size=16, n_views=2, local_crops=3, local_size=8)
    views = augmentation(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    assert augmentation.n_views == 5
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3


@pytest.mark.parametrize("objective", [NTXent(), SupCon(), "byol", "simsiam"])
def test_objectives_accepting_more_than_two_views_train_on_multi_crop_batches(objective):
    encoder, projector = tiny_networks()
    if objective == "byol":
        objective = BYOL(encoder, projector, predictor_hidden_dim=8)
    elif objective == "simsiam":
        objective = SimSiam(projector, predictor_hidden_dim=4)
    g = torch.Generator().manual_seed(2)
    views = [torch.rand(4, 3, 16, 16, generator=g) for _ in range(2)] + [torch.rand(4, 3, 8, 8, generator=g)] * 2
    loss = objective(Batch(views=views, index=torch.arange(4), labels=torch.tensor([0, 1, 0, 1])),
                     encoder, projector).loss
    loss.backward()
    assert torch.isfinite(loss) and encoder.net.conv1.weight.grad is not None


# --- conformance kit ----------------------------------------------------------------------------

@pytest.mark.parametrize(("factory", "params"), [
    (MoCo, {"queue_size": 16, "bn_groups": 2, "symmetric": True, "momentum_schedule": "cosine"}),
    (BYOL, {"predictor_hidden_dim": 16}),
    (SimSiam, {"predictor_hidden_dim": 4}),
    (SupCon, {}),
    (InstDisc, {"num_negatives": 8}),
], ids=lambda value: getattr(value, "__name__", ""))
def test_objective_conforms_to_the_interface(factory, params):
    encoder, projector = tiny_networks()
    check_objective(factory, params, two_view_batch(labels=torch.tensor([0, 1, 2, 0, 1, 2])), encoder, projector,
                    dataset_size=32, num_classes=3, total_steps=10)


def test_moco_shuffle_bn_groups_must_split_evenly_over_processes(monkeypatch):
    from toolkit import distributed

    encoder, projector = tiny_networks()
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"bn_groups \(4\) must be a multiple of the number of processes \(3\)"):
        MoCo(encoder, projector, dataset_size=64, bn_groups=4)
    MoCo(encoder, projector, dataset_size=64, bn_groups=6)
    MoCo(encoder, projector, dataset_size=64, bn_groups=1)  # shuffle-BN off: any process count
