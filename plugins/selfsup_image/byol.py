"""BYOL: an online network predicts the projection of a slowly moving (EMA) target network."""

from __future__ import annotations

import torch

from toolkit.compatibility import Contract, declare
from toolkit.limits import Momentum
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import normalized_mse
from toolkit.projectors import MLPProjector

from toolkit.momentum import MomentumSchedule, MomentumTarget
from toolkit.views import embed_views, forward_runs, prediction_pairs


@declare(Contract(consumes={"tensor"}, min_views=2))
class BYOL(Objective):
    """BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

    Online: ``p_v = predictor(projector(encoder(x_v)))``; target: ``z'_v = target(x_v)``, an EMA
    copy of encoder and projector that receives no gradient. With two views the loss is the
    paper's symmetrised ``L = l(p_1, z'_2) + l(p_2, z'_1)``, ``l(p, z) = 2 - 2 cos(p, z)``
    (:func:`toolkit.losses.normalized_mse`). With more views (multi-crop) every view predicts
    each global view other than itself and ``L = 2 * mean over those pairs``.

    The target's decay ``tau`` follows a cosine from ``base_tau`` (0.996 for ImageNet, 0.99 for
    CIFAR-10) to 1 over training (``tau_schedule: constant`` keeps it fixed); the value last used
    is ``target.momentum``, part of the checkpoint. The predictor is
    ``Linear -> BN -> ReLU -> Linear``, ``D -> predictor_hidden_dim -> D`` (4096 in the paper),
    with ``D`` the projector's output (256 in the paper). Views: ``(N, C, H, W)`` each, ``V >= 2``.

    >>> objective = BYOL(encoder, projector, base_tau=0.99)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        encoder: Encoder,
        projector: Projector,
        base_tau: Momentum = 0.996,
        tau_schedule: MomentumSchedule = "cosine",
        predictor_hidden_dim: int = 4096,
    ) -> None:
        super().__init__()
        self.target = MomentumTarget(encoder, projector, base_tau, tau_schedule)
        self.predictor = MLPProjector(projector.output_dim, predictor_hidden_dim, projector.output_dim, layers=2)

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        pairs = prediction_pairs(len(batch.views))
        predictions = self.predictor(torch.cat(embed_views(batch.views, encoder, projector))).chunk(len(batch.views))
        targets = forward_runs(batch.views[:2], self.target)
        loss = 2 * torch.stack([normalized_mse(predictions[i], targets[j]) for i, j in pairs]).mean()
        return ObjectiveOutput(loss, {"tau": self.target.momentum})

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        self.target.update(encoder, projector, step, total_steps)
