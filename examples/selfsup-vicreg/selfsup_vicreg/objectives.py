"""The VICReg and Barlow Twins objectives: two views, one embedding each, a loss of the pair.

Both losses are functions of batch statistics (VICReg's per-dimension variance and covariance,
Barlow Twins' cross-correlation matrix), so under ``torchrun`` they are computed over the global
batch, not each process's shard: see :func:`pairwise_loss`.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import torch
from torch import Tensor

from toolkit import Batch, Encoder, Objective, ObjectiveOutput, Projector, embed_views, gather_with_grad

from selfsup_vicreg.losses import barlow_twins_loss, vicreg_loss

PairLoss = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


class VICReg(Objective):
    """VICReg (Bardes, Ponce & LeCun 2022): :func:`selfsup_vicreg.losses.vicreg_loss` of the
    projections ``z_v = projector(pool(encoder(x_v)))``, ``z_v: (N, D)``, of two views of the
    global batch (all processes' items under ``torchrun``: :func:`pairwise_loss`).

    Paper defaults: ``sim_coeff = std_coeff = 25``, ``cov_coeff = 1``, with a 3-layer expander
    (``projector: {name: mlp, layers: 3, hidden_dim: 8192, output_dim: 8192}`` on ImageNet).
    Metrics are the unweighted terms ``invariance``, ``variance``, ``covariance``.

    >>> objective = VICReg(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: V x (N, ...), V >= 2
    """

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0) -> None:
        super().__init__()
        for name, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
            if value < 0:
                raise ValueError(f"objective.{name} must be 0 or more, got {value}")
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        return pairwise_loss(batch, encoder, projector, lambda z_a, z_b: vicreg_loss(
            z_a, z_b, sim_coeff=self.sim_coeff, std_coeff=self.std_coeff, cov_coeff=self.cov_coeff))


class BarlowTwins(Objective):
    """Barlow Twins (Zbontar et al. 2021): :func:`selfsup_vicreg.losses.barlow_twins_loss` of
    the projections ``z_v = projector(pool(encoder(x_v)))``, ``z_v: (N, D)``, of two views of the
    global batch (all processes' items under ``torchrun``: :func:`pairwise_loss`).

    Paper defaults: ``lambda_offdiag = 5e-3`` with a 3-layer projector
    (``projector: {name: mlp, layers: 3, hidden_dim: 8192, output_dim: 8192}`` on ImageNet).
    Metrics are the unweighted terms ``on_diagonal`` and ``off_diagonal``.

    >>> objective = BarlowTwins(lambda_offdiag=5e-3)
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: V x (N, ...), V >= 2
    """

    def __init__(self, lambda_offdiag: float = 5e-3) -> None:
        super().__init__()
        if lambda_offdiag < 0:
            raise ValueError(f"objective.lambda_offdiag must be 0 or more, got {lambda_offdiag}")
        self.lambda_offdiag = lambda_offdiag

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        return pairwise_loss(batch, encoder, projector,
                             lambda z_a, z_b: barlow_twins_loss(z_a, z_b, lambda_offdiag=self.lambda_offdiag))


def pairwise_loss(batch: Batch, encoder: Encoder, projector: Projector, loss: PairLoss) -> ObjectiveOutput:
    """``loss`` averaged over every pair of views ``(a, b)``, ``a < b``, of the global batch, with
    its terms as metrics.

    Two views (both papers) make one pair; more views (``augmentation.n_views``) average over
    all ``V (V - 1) / 2`` pairs. Views are encoded with :func:`toolkit.embed_views` (one forward
    pass per run of same-shape views), ``z: V x (B, D)``.

    Under ``torchrun`` with ``W`` processes of ``B`` items, ``z`` is gathered from every process
    with :func:`toolkit.gather_with_grad` into ``(V, W*B, D)`` (rows in rank order), so every
    process computes the same loss ``L`` of the ``N = W*B`` items, exactly the one process's loss
    of the whole batch; the statistics of a shard alone would give a different loss (a variance
    of ``B`` rows is not that of ``N``). The gradient is exact too: the gather's backward sums
    ``dL/dz`` over processes (all equal), so process ``r`` gets ``W dL/dz_r`` for its own rows
    ``z_r``, and DDP's average over processes, ``1/W sum_r W (dL/dz_r)(dz_r/dtheta)``, is
    ``dL/dtheta``. On one process the gather is the identity.
    """
    if len(batch.views) < 2:
        raise ValueError(f"this objective compares two views of each item, got {len(batch.views)}; "
                         f"set augmentation.n_views to 2")
    z = gather_with_grad(torch.stack(embed_views(batch.views, encoder, projector)), dim=1)  # (V, N, D)
    pairs = list(combinations(range(len(z)), 2))
    total = torch.zeros((), device=z.device)
    metrics: dict[str, Tensor] = {}
    for a, b in pairs:
        value, terms = loss(z[a], z[b])
        total = total + value / len(pairs)
        for key, term in terms.items():
            metrics[key] = metrics.get(key, 0.0) + term.detach() / len(pairs)
    return ObjectiveOutput(total, metrics)
