"""The VICReg and Barlow Twins objectives: two views, one embedding each, a loss of the pair."""

from __future__ import annotations

from itertools import combinations
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from toolkit import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.interfaces import pool

from selfsup_vicreg.losses import barlow_twins_loss, vicreg_loss

PairLoss = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


class VICReg(Objective):
    """VICReg (Bardes, Ponce & LeCun 2022): :func:`selfsup_vicreg.losses.vicreg_loss` of the
    projections ``z_v = projector(pool(encoder(x_v)))``, ``z_v: (N, D)``, of two views.

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
    the projections ``z_v = projector(pool(encoder(x_v)))``, ``z_v: (N, D)``, of two views.

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
    """``loss`` averaged over every pair of views ``(a, b)``, ``a < b``, with its terms as metrics.

    Two views (both papers) make one pair; more views (``augmentation.n_views``) average over
    all ``V (V - 1) / 2`` pairs.
    """
    if len(batch.views) < 2:
        raise ValueError(f"this objective compares two views of each item, got {len(batch.views)}; "
                         f"set augmentation.n_views to 2")
    z = embed_views(batch.views, encoder, projector)
    pairs = list(combinations(range(len(z)), 2))
    total = torch.zeros((), device=z[0].device)
    metrics: dict[str, Tensor] = {}
    for a, b in pairs:
        value, terms = loss(z[a], z[b])
        total = total + value / len(pairs)
        for key, term in terms.items():
            metrics[key] = metrics.get(key, 0.0) + term.detach() / len(pairs)
    return ObjectiveOutput(total, metrics)


def embed_views(views: Sequence[Any], encoder: Encoder, projector: Projector) -> list[Tensor]:
    """``z_v = projector(pool(encoder(x_v)))`` for every view; ``V`` tensors ``(N, D)``.

    Tensor views of one shape go through the encoder in a single forward pass (as SimCLR's
    NT-Xent does), so the views share their batch-norm statistics and the encoder runs once;
    other views (tokenized text dicts, crops of several sizes) are encoded one by one.
    """
    def embed(x: Any) -> Tensor:
        return projector(pool(encoder(x)))

    if all(isinstance(v, Tensor) for v in views) and len({tuple(v.shape) for v in views}) == 1:
        return list(embed(torch.cat(list(views))).chunk(len(views)))
    return [embed(v) for v in views]
