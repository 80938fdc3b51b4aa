"""Pure loss functions of two batches of embeddings: VICReg and Barlow Twins.

Both take the projections of two views of the same ``N`` items, ``z_a, z_b: (N, D)`` (row ``i``
of each is item ``i``), compute in float32, and return ``(loss, terms)``: the scalar loss and
its unweighted terms (for logging). Neither needs negatives; both prevent collapse through
statistics of the batch, so ``N`` must be at least 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

VARIANCE_TARGET = 1.0
"""VICReg's ``gamma``: the standard deviation each dimension is pushed up to."""

VARIANCE_EPS = 1e-4
"""VICReg's ``epsilon`` inside the square root, which keeps the gradient finite at zero variance."""

STANDARDISE_EPS = 1e-5
"""Added to the variance before Barlow Twins' standardisation (``BatchNorm1d``'s default eps)."""


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Variance-Invariance-Covariance Regularisation (Bardes, Ponce & LeCun 2022, "VICReg",
    ICLR; eqs. 1-6, with the weighting of the official code).

    ``z_a, z_b: (N, D)``. With ``Z`` either branch, ``Z_j`` its ``j``-th column and
    ``Z~ = Z - mean_i Z_i`` the centred batch::

        invariance  s(Z_a, Z_b) = 1/(N D) sum_i ||z_a_i - z_b_i||^2              (mean squared error)
        variance    v(Z) = 1/D sum_j max(0, gamma - sqrt(Var(Z_j) + eps))      (gamma = 1, eps = 1e-4,
                                                                                 unbiased Var)
        covariance  c(Z) = 1/D sum_{j != k} C(Z)_jk^2,  C(Z) = Z~^T Z~ / (N - 1)

        loss = sim_coeff * s + std_coeff * (v(Z_a) + v(Z_b)) / 2 + cov_coeff * (c(Z_a) + c(Z_b))

    The paper's defaults ``sim_coeff = std_coeff = 25``, ``cov_coeff = 1`` are for this
    weighting: the official code averages the two variance terms and sums the two covariance
    terms. Returns the loss and the unweighted terms ``invariance``, ``variance`` (the average
    of the two branches) and ``covariance`` (the sum). A batch collapsed to one point has the
    largest variance term, ``gamma - sqrt(eps) = 0.99``.
    """
    _check_pair(z_a, z_b, "vicreg_loss")
    z_a, z_b = z_a.float(), z_b.float()
    invariance = F.mse_loss(z_a, z_b)
    variance = (_variance_hinge(z_a) + _variance_hinge(z_b)) / 2
    covariance = _off_diagonal_covariance(z_a) + _off_diagonal_covariance(z_b)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, lambda_offdiag: float = 5e-3) -> tuple[Tensor, dict[str, Tensor]]:
    """Barlow Twins' redundancy-reduction loss (Zbontar, Jing, Misra, LeCun & Deny 2021,
    "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML; eq. 1-2).

    ``z_a, z_b: (N, D)``. Each column is standardised over the batch, ``z^_ij = (z_ij - mu_j) /
    sqrt(sigma_j^2 + eps)`` (biased variance, ``eps = 1e-5``, as the official code's
    ``BatchNorm1d(affine=False)``), and ``C = z^_a^T z^_b / N`` is the ``(D, D)``
    cross-correlation matrix::

        loss = sum_i (1 - C_ii)^2  +  lambda_offdiag * sum_{i != j} C_ij^2

    ``lambda_offdiag = 5e-3`` is the paper's value. Returns the loss and the unweighted terms
    ``on_diagonal`` (0 when the views agree perfectly) and ``off_diagonal`` (0 when the
    dimensions are decorrelated). A batch collapsed to one point has ``C = 0``, so its
    ``on_diagonal`` is ``D``.
    """
    _check_pair(z_a, z_b, "barlow_twins_loss")
    n = z_a.shape[0]
    c = _standardise(z_a.float()).T @ _standardise(z_b.float()) / n
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    off_diagonal = _off_diagonal(c).pow(2).sum()
    return on_diagonal + lambda_offdiag * off_diagonal, {"on_diagonal": on_diagonal, "off_diagonal": off_diagonal}


def _check_pair(z_a: Tensor, z_b: Tensor, name: str) -> None:
    if z_a.dim() != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"{name}: expected two (N, D) embeddings of one shape, got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}")
    if z_a.shape[0] < 2:
        raise ValueError(f"{name}: batch statistics need at least 2 items, got N={z_a.shape[0]}; "
                         f"raise trainer.batch_size")


def _variance_hinge(z: Tensor) -> Tensor:
    std = torch.sqrt(z.var(dim=0) + VARIANCE_EPS)
    return F.relu(VARIANCE_TARGET - std).mean()


def _off_diagonal_covariance(z: Tensor) -> Tensor:
    n, dim = z.shape
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (n - 1)
    return _off_diagonal(covariance).pow(2).sum() / dim


def _standardise(z: Tensor) -> Tensor:
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + STANDARDISE_EPS)


def _off_diagonal(matrix: Tensor) -> Tensor:
    """The ``D * (D - 1)`` off-diagonal entries of a square ``(D, D)`` matrix."""
    return matrix[~torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)]
