"""Temporal contrast: two times of one video are positives, other videos are negatives, and
optionally far-apart times of the same video are negatives too."""

from __future__ import annotations

import torch
from torch import Tensor

from toolkit.views import embed_views
from toolkit.compatibility import Contract, declare
from toolkit.distributed import gather_with_grad
from toolkit.limits import NonNegativeFloat, Temperature
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import info_nce, nt_xent


@declare(lambda p: Contract(consumes={"tensor"}, min_views=3 if p.get("tcn_weight", 0.0) > 0 else 2,
                            max_views=3 if p.get("tcn_weight", 0.0) > 0 else 2))
class TemporalContrast(Objective):
    """CVRL's temporal InfoNCE (Qian et al. 2021, eq. 1), with an optional time-contrastive term
    (Sermanet et al. 2018, "Time-Contrastive Networks").

    ``z_v = projector(encoder(x_v))`` for the views of ``N`` videos (all views of one shape in one
    forward pass): ``x_0`` and ``x_1`` are two times of the same video (the ``temporal``
    augmentation), optionally ``x_2`` a time at least ``tcn_margin`` frames from ``x_0``.
    Embeddings are gathered from every process under torchrun, so the negatives are the
    global batch's. With ``u = z / ||z||`` and ``s(a, b) = u_a . u_b / temperature``::

        L_nce = nt_xent(z_0, z_1)      # SimCLR's symmetric NT-Xent over the 2N views:
                                       # one positive, the 2N - 2 views of other videos as negatives
        L_tcn = mean_i -log( exp(s(z_0i, z_1i)) / sum_j [exp(s(z_0i, z_1j)) + exp(s(z_0i, z_2j))] )
        loss  = L_nce + tcn_weight * L_tcn

    ``L_tcn`` adds, for anchor ``i``, its own video's far frame ``z_2i`` (TCN's negative) to the
    in-batch candidates; it is TCN's idea in the InfoNCE (multi-class N-pair) form rather than
    TCN's triplet loss, so both terms share one temperature and scale. CVRL uses
    ``temperature`` 0.1. Metrics: ``contrastive_acc`` (the positive ranks first among the ``2N - 1``
    candidates of ``L_nce``) and, with the TCN term, ``tcn_acc`` (likewise among ``L_tcn``'s ``2N``)
    and ``far_negative_acc`` (the positive is more similar than the video's own far frame).

    >>> objective = TemporalContrast(temperature=0.1, tcn_weight=0.5)
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: 3 x (N, C, [T,] H, W)
    """

    def __init__(self, temperature: Temperature = 0.1, tcn_weight: NonNegativeFloat = 0.0) -> None:
        super().__init__()
        self.temperature, self.tcn_weight = temperature, tcn_weight

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        views, needed = len(batch.views), 3 if self.tcn_weight > 0 else 2
        if views != needed:
            raise ValueError(
                f"temporal-contrast with tcn_weight {self.tcn_weight} needs {needed} views per video, the "
                f"augmentation makes {views}; "
                + ("set augmentation.tcn_margin (the far negative's distance in frames)" if self.tcn_weight > 0 else
                   "set objective.tcn_weight > 0 to use the far negatives of augmentation.tcn_margin, or remove it"))
        z = gather_with_grad(torch.stack(embed_views(batch.views, encoder, projector)), dim=1)  # (V, N, D)
        loss, accuracy = nt_xent(z[:2], self.temperature)
        metrics: dict[str, Tensor | float] = {"contrastive_acc": accuracy}
        if self.tcn_weight > 0:
            tcn, tcn_accuracy = info_nce(z[0], z[1], self.temperature, hard_negatives=z[2])
            loss = loss + self.tcn_weight * tcn
            metrics["tcn_acc"] = tcn_accuracy
            metrics["far_negative_acc"] = far_negative_accuracy(z[0], z[1], z[2])
        return ObjectiveOutput(loss, metrics)


@torch.no_grad()
def far_negative_accuracy(anchor: Tensor, positive: Tensor, far: Tensor) -> Tensor:
    """Fraction of rows whose positive is more cosine-similar to the anchor than their far
    negative: ``anchor, positive, far: (N, D)`` -> scalar."""
    cos = torch.nn.functional.cosine_similarity
    return (cos(anchor, positive, dim=1) > cos(anchor, far, dim=1)).float().mean()
