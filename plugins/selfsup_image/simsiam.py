"""SimSiam: a predictor and a stop-gradient, no negatives and no momentum encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import negative_cosine
from toolkit.projectors import MLPProjector

from toolkit.views import embed_views, prediction_pairs


@declare(Contract(consumes={"tensor"}, min_views=2))
class SimSiam(Objective):
    """SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

    ``z_v = projector(encoder(x_v))``, ``p_v = predictor(z_v)``; with two views
    ``L = D(p_1, sg(z_2)) / 2 + D(p_2, sg(z_1)) / 2``, ``D(p, z) = -cos(p, z)``
    (:func:`toolkit.losses.negative_cosine`) and ``sg`` the stop-gradient. With more views
    (multi-crop) ``L`` is the mean over every view predicting each global view other than itself.

    The predictor is the paper's bottleneck ``Linear -> BN -> ReLU -> Linear``,
    ``D -> predictor_hidden_dim -> D`` (2048 -> 512 -> 2048); the projector is the recipe's
    (the paper's: ``mlp`` with ``output_batch_norm: true``). Views: ``(N, C, H, W)``, ``V >= 2``.

    >>> objective = SimSiam(projector, predictor_hidden_dim=512)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(self, projector: Projector, predictor_hidden_dim: int = 512) -> None:
        super().__init__()
        self.predictor = MLPProjector(projector.output_dim, predictor_hidden_dim, projector.output_dim, layers=2)

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        pairs = prediction_pairs(len(batch.views))
        z = embed_views(batch.views, encoder, projector)
        predictions = self.predictor(torch.cat(z)).chunk(len(z))
        loss = torch.stack([negative_cosine(predictions[i], z[j].detach()) for i, j in pairs]).mean()
        with torch.no_grad():  # collapse monitor: the paper's per-channel std of normalised z, ~1/sqrt(D) when healthy
            spread = F.normalize(z[0].float(), dim=1).std(dim=0).mean()
        return ObjectiveOutput(loss, {"z_std": spread})
