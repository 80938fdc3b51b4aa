"""SimCLR's objective: NT-Xent over all views of a batch, same-size views encoded in one forward pass."""

from __future__ import annotations

import torch

from toolkit.compatibility import Contract, declare
from toolkit.distributed import gather_with_grad
from toolkit.limits import Temperature
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import nt_xent

from toolkit.views import embed_views


@declare(Contract(consumes={"tensor"}, min_views=2))
class NTXent(Objective):
    """SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations"): ``z = projector(encoder(x))`` for all ``V`` views (one pass per view
    size, so multi-crop works), then
    :func:`toolkit.losses.nt_xent` over the global batch (every process's embeddings are gathered
    under torchrun, with gradients). Paper defaults: ``temperature`` 0.5 (CIFAR), 0.1-0.2 at
    large batch.

    >>> objective = NTXent(temperature=0.5)
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: V x (N, C, H, W)
    """

    def __init__(self, temperature: Temperature = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        z = gather_with_grad(torch.stack(embed_views(batch.views, encoder, projector)), dim=1)  # (V, N, D)
        loss, accuracy = nt_xent(z, self.temperature)
        return ObjectiveOutput(loss, {"contrastive_acc": accuracy})
