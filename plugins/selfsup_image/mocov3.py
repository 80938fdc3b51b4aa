"""MoCo v3: a predictor on the query branch, a momentum key encoder, keys of the global batch, no queue."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit import distributed
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector, pool
from toolkit.limits import Momentum, Positive, Temperature
from toolkit.momentum import MomentumSchedule, MomentumTarget
from toolkit.projectors import MLPProjector


@declare(Contract(consumes={"tensor"}, min_views=2, max_views=2))
class MoCoV3(Objective):
    """MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

    Queries ``q_v = predictor(projector(encoder(x_v)))`` of both views ``x_1, x_2: (N, C, H, W)``;
    keys ``k_v = target(x_v)`` from the momentum copy of encoder and projector (no gradient),
    gathered over processes into the global batch ``(W * N, D)``. With ``u`` the L2-normalised rows,
    the paper's contrastive loss of process ``r``'s queries is::

        ctr(q, k) = 2 * tau * mean_i -log( exp(u(q_i) . u(k_{rN+i}) / tau) / sum_j exp(u(q_i) . u(k_j) / tau) )

    (every other key of the global batch a negative, no queue), symmetrised:
    ``loss = ctr(q_1, k_2) + ctr(q_2, k_1)`` (:func:`contrastive_loss`). The ``2 * tau`` factor
    of the official code makes the gradient's scale independent of ``tau``. The predictor is
    ``Linear -> BN -> ReLU -> Linear``, ``D -> predictor_hidden_dim -> D`` (4096 in the paper),
    ``D`` the projector's output (256, from a 3-layer 4096-wide projector with batch norm after
    its last layer). After each optimizer step the target moves by EMA with ``momentum`` raised
    from 0.99 to 1 by a cosine (``momentum_schedule: constant`` keeps it fixed). ``temperature``
    is 0.2 for ViTs (1.0 for ResNets). ``predictor_batch_norm: false`` drops the predictor's batch
    norm.

    >>> objective = MoCoV3(encoder, projector, temperature=0.2, predictor_hidden_dim=512)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        encoder: Encoder,
        projector: Projector,
        temperature: Temperature = 0.2,
        momentum: Momentum = 0.99,
        momentum_schedule: MomentumSchedule = "cosine",
        predictor_hidden_dim: Positive = 4096,
        predictor_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.target = MomentumTarget(encoder, projector, momentum, momentum_schedule)
        self.predictor = MLPProjector(projector.output_dim, predictor_hidden_dim, projector.output_dim, layers=2,
                                      batch_norm=predictor_batch_norm)

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        views = batch.views[:2]
        # one pass per view, as in the paper's code: each view's batch-norm statistics are its own
        q1, q2 = (self.predictor(projector(pool(encoder(x)))) for x in views)
        k1, k2 = (distributed.all_gather(self.target(x)) for x in views)
        offset = distributed.rank() * len(batch)
        loss_12, accuracy_12 = contrastive_loss(q1, k2, self.temperature, offset)
        loss_21, accuracy_21 = contrastive_loss(q2, k1, self.temperature, offset)
        return ObjectiveOutput(loss_12 + loss_21, {"contrastive_acc": (accuracy_12 + accuracy_21) / 2,
                                                   "momentum": float(self.target.momentum)})

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        self.target.update(encoder, projector, step, total_steps)


def contrastive_loss(query: Tensor, keys: Tensor, temperature: float, offset: int = 0) -> tuple[Tensor, Tensor]:
    """MoCo v3's ``ctr``: ``2 * tau * CE(u(q) u(k)^T / tau, offset + arange(N))``.

    ``query: (N, D)``, this process's queries; ``keys: (M, D)``, the keys of the global batch, query
    ``i``'s positive at row ``offset + i`` (``offset = rank * N``). Returns the scalar loss and the
    top-1 accuracy of picking the positive among the ``M`` keys.
    """
    q, k = F.normalize(query.float(), dim=1), F.normalize(keys.float(), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(len(q), device=q.device) + offset
    loss = 2 * temperature * F.cross_entropy(logits, labels)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy
