"""``vicreg_loss`` and ``barlow_twins_loss`` agree with naive loops and give the known values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from selfsup_vicreg.losses import barlow_twins_loss, vicreg_loss

N, D = 8, 5


def embeddings(seed: int, n: int = N, dim: int = D) -> Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_vicreg(z_a: Tensor, z_b: Tensor, sim: float, std: float, cov: float) -> dict[str, float]:
    n, dim = z_a.shape
    invariance = sum((z_a[i, j] - z_b[i, j]) ** 2 for i in range(n) for j in range(dim)) / (n * dim)

    def variance(z: Tensor) -> float:
        total = 0.0
        for j in range(dim):
            mean = sum(z[i, j] for i in range(n)) / n
            var = sum((z[i, j] - mean) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, 1.0 - math.sqrt(var + 1e-4))
        return total / dim

    def covariance(z: Tensor) -> float:
        means = [sum(z[i, j] for i in range(n)) / n for j in range(dim)]
        total = 0.0
        for j in range(dim):
            for k in range(dim):
                if j != k:
                    c = sum((z[i, j] - means[j]) * (z[i, k] - means[k]) for i in range(n)) / (n - 1)
                    total += c ** 2
        return total / dim

    v = (variance(z_a) + variance(z_b)) / 2
    c = covariance(z_a) + covariance(z_b)
    return {"loss": float(sim * invariance + std * v + cov * c), "invariance": float(invariance),
            "variance": float(v), "covariance": float(c)}


def naive_barlow_twins(z_a: Tensor, z_b: Tensor, lambda_offdiag: float) -> dict[str, float]:
    n, dim = z_a.shape

    def standardised(z: Tensor) -> list[list[float]]:
        columns = []
        for j in range(dim):
            mean = sum(float(z[i, j]) for i in range(n)) / n
            var = sum((float(z[i, j]) - mean) ** 2 for i in range(n)) / n
            columns.append([(float(z[i, j]) - mean) / math.sqrt(var + 1e-5) for i in range(n)])
        return columns

    a, b = standardised(z_a), standardised(z_b)
    on, off = 0.0, 0.0
    for j in range(dim):
        for k in range(dim):
            c = sum(a[j][i] * b[k][i] for i in range(n)) / n
            if j == k:
                on += (1 - c) ** 2
            else:
                off += c ** 2
    return {"loss": on + lambda_offdiag * off, "on_diagonal": on, "off_diagonal": off}


@pytest.mark.parametrize(("sim", "std", "cov"), [(25.0, 25.0, 1.0), (1.0, 0.5, 2.0)])
def test_vicreg_loss_matches_a_naive_loop(sim: float, std: float, cov: float) -> None:
    z_a, z_b = embeddings(0) * 0.5, embeddings(1) * 0.5 + 0.3
    loss, terms = vicreg_loss(z_a, z_b, sim_coeff=sim, std_coeff=std, cov_coeff=cov)
    expected = naive_vicreg(z_a, z_b, sim, std, cov)

    assert {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}} == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("lambda_offdiag", [5e-3, 0.5])
def test_barlow_twins_loss_matches_a_naive_loop(lambda_offdiag: float) -> None:
    z_a, z_b = embeddings(2), embeddings(3) + embeddings(2)
    loss, terms = barlow_twins_loss(z_a, z_b, lambda_offdiag=lambda_offdiag)
    expected = naive_barlow_twins(z_a, z_b, lambda_offdiag)

    assert {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}} == pytest.approx(expected, rel=1e-5)


def test_vicreg_invariance_is_zero_for_identical_embeddings() -> None:
    z = embeddings(4)

    assert vicreg_loss(z, z.clone())[1]["invariance"].item() == 0.0


def test_vicreg_variance_term_is_maximal_for_a_collapsed_batch() -> None:
    collapsed = embeddings(5, n=1).expand(N, D)
    _, terms = vicreg_loss(collapsed, collapsed)

    assert terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4))
    assert terms["covariance"].item() == 0.0


def test_vicreg_variance_term_is_zero_when_every_dimension_has_unit_spread() -> None:
    wide = embeddings(6, n=256) * 3

    assert vicreg_loss(wide, wide)[1]["variance"].item() == 0.0


def test_barlow_twins_loss_vanishes_for_identical_decorrelated_embeddings() -> None:
    # Columns are orthogonal +-1 patterns (rows of a Hadamard matrix): zero mean, unit variance,
    # uncorrelated, so C is the identity up to the standardisation's eps.
    z = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    loss, terms = barlow_twins_loss(z, z.clone())

    assert terms["off_diagonal"].item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)


def test_barlow_twins_on_diagonal_term_is_maximal_for_a_collapsed_batch() -> None:
    collapsed = embeddings(7, n=1).expand(N, D)
    _, terms = barlow_twins_loss(collapsed, collapsed)

    assert terms["on_diagonal"].item() == pytest.approx(D)
    assert terms["off_diagonal"].item() == 0.0


@pytest.mark.parametrize("loss", [vicreg_loss, barlow_twins_loss])
def test_losses_are_computed_in_float32_from_half_precision_inputs(loss) -> None:
    value, _ = loss(embeddings(8).bfloat16(), embeddings(9).bfloat16())

    assert value.dtype == torch.float32 and math.isfinite(value.item())


@pytest.mark.parametrize("loss", [vicreg_loss, barlow_twins_loss])
def test_losses_reject_embeddings_of_different_shapes(loss) -> None:
    with pytest.raises(ValueError, match=r"two \(N, D\) embeddings of one shape, got \(8, 5\) and \(8, 4\)"):
        loss(embeddings(0), embeddings(1, dim=4))


@pytest.mark.parametrize("loss", [vicreg_loss, barlow_twins_loss])
def test_losses_reject_a_batch_of_one(loss) -> None:
    with pytest.raises(ValueError, match="at least 2 items.*trainer.batch_size"):
        loss(embeddings(0, n=1), embeddings(1, n=1))
