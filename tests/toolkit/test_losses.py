"""The loss functions against naive loops, written straight from the papers' formulas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toolkit.losses import info_nce, negative_cosine, normalized_mse, nt_xent, supervised_nt_xent


def naive_nt_xent(z: torch.Tensor, temperature: float) -> float:
    """SimCLR eq. (1), averaged over every anchor and each of its positives, one pair at a time."""
    views, n, _ = z.shape
    rows = [(v, i) for v in range(views) for i in range(n)]
    u = {row: F.normalize(z[row], dim=0) for row in rows}
    total, count = 0.0, 0
    for anchor in rows:
        denominator = sum(math.exp(float(u[anchor] @ u[other]) / temperature) for other in rows if other != anchor)
        positives = [other for other in rows if other != anchor and other[1] == anchor[1]]
        anchor_loss = 0.0
        for positive in positives:
            anchor_loss += -math.log(math.exp(float(u[anchor] @ u[positive]) / temperature) / denominator)
        total += anchor_loss / len(positives)
        count += 1
    return total / count


def test_nt_xent_matches_the_naive_loop_for_two_views():
    z = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss, _ = nt_xent(z, temperature=0.5)
    assert math.isclose(loss.item(), naive_nt_xent(z, 0.5), rel_tol=1e-5)


def test_nt_xent_matches_the_naive_loop_for_four_views():
    z = torch.randn(4, 3, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss, _ = nt_xent(z, temperature=0.2)
    assert math.isclose(loss.item(), naive_nt_xent(z, 0.2), rel_tol=1e-5)


def test_nt_xent_is_invariant_to_the_scale_of_z():
    z = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(nt_xent(z, 0.1)[0], nt_xent(z * 7.5, 0.1)[0], atol=1e-5)


def test_identical_views_far_apart_give_near_zero_loss_and_full_accuracy():
    items = torch.eye(4) * 10
    z = torch.stack([items, items])
    loss, accuracy = nt_xent(z, temperature=0.05)
    assert loss.item() < 1e-6
    assert accuracy.item() == 1.0


def test_nt_xent_gradient_reaches_every_view():
    z = torch.randn(2, 5, 3, requires_grad=True)
    nt_xent(z, 0.5)[0].backward()
    assert (z.grad.abs().sum(dim=-1) > 0).all()


def test_supervised_form_with_distinct_groups_equals_nt_xent():
    z = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(3))
    groups = torch.arange(6).repeat(2)
    assert torch.allclose(supervised_nt_xent(z.reshape(12, 5), groups, 0.3)[0], nt_xent(z, 0.3)[0])


def test_supervised_form_ignores_anchors_without_positives():
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(4))
    loss, _ = supervised_nt_xent(z, torch.tensor([0, 0, 1]), 0.5)
    u = F.normalize(z, dim=1)
    s = u @ u.T / 0.5
    expected = -(s[0, 1] - torch.logsumexp(s[0, [1, 2]], 0) + s[1, 0] - torch.logsumexp(s[1, [0, 2]], 0)) / 2
    assert torch.allclose(loss, expected, atol=1e-6)


def naive_info_nce(query, positive, temperature, negatives=(), in_batch=True, hard=(), hard_weight=0.0):
    """Row by row: -log(exp(s_pos) / sum over candidates of exp(s_c + bias_c))."""
    total = 0.0
    for i in range(len(query)):
        q = F.normalize(query[i], dim=0)
        s = lambda v: float(q @ F.normalize(v, dim=0)) / temperature  # noqa: E731
        candidates = [s(positive[j]) for j in range(len(positive))] if in_batch else [s(positive[i])]
        candidates += [s(v) for v in negatives]
        candidates += [s(hard[j]) + (hard_weight if j == i else 0.0) for j in range(len(hard))]
        total += -math.log(math.exp(s(positive[i])) / sum(math.exp(c) for c in candidates))
    return total / len(query)


def test_info_nce_in_batch_matches_the_naive_loop():
    g = torch.Generator().manual_seed(5)
    q, p = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    assert math.isclose(info_nce(q, p, 0.1)[0].item(), naive_info_nce(q, p, 0.1), rel_tol=1e-5)


def test_info_nce_with_a_queue_and_no_in_batch_negatives_matches_the_naive_loop():
    g = torch.Generator().manual_seed(6)
    q, p, queue = (torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (3, 3, 7))
    loss, _ = info_nce(q, p, 0.2, negatives=queue, in_batch=False)
    assert math.isclose(loss.item(), naive_info_nce(q, p, 0.2, negatives=queue, in_batch=False), rel_tol=1e-5)


def test_info_nce_with_weighted_hard_negatives_matches_the_naive_loop():
    g = torch.Generator().manual_seed(7)
    q, p, hard = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(3))
    loss, _ = info_nce(q, p, 0.05, hard_negatives=hard, hard_negative_weight=0.5)
    assert math.isclose(loss.item(), naive_info_nce(q, p, 0.05, hard=hard, hard_weight=0.5), rel_tol=1e-5)


def test_negative_cosine_matches_the_naive_loop():
    g = torch.Generator().manual_seed(8)
    p, z = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    naive = sum(-float(p[i] @ z[i]) / (float(p[i].norm()) * float(z[i].norm())) for i in range(5)) / 5
    assert math.isclose(negative_cosine(p, z).item(), naive, rel_tol=1e-5)


def test_normalized_mse_matches_the_naive_loop_of_squared_distances_of_unit_vectors():
    g = torch.Generator().manual_seed(9)
    p, z = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    naive = sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(6)) / 6
    assert math.isclose(normalized_mse(p, z).item(), naive, rel_tol=1e-5)
