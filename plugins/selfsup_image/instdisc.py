"""Instance discrimination with a memory bank: one feature per data-set item."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Interval
import torch.nn.functional as F

from toolkit.compatibility import Contract, declare
from toolkit import distributed
from toolkit.limits import Positive, Temperature
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import info_nce
from toolkit.memory import MemoryBank
from toolkit.views import embed_views


@declare(Contract(consumes={"tensor"}))
class InstDisc(Objective):
    """InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination").

    The memory bank ``v: (dataset_size, D)`` holds one unit vector per item (``D`` = the
    projector's output, 128 in the paper). For an item ``i`` with feature ``f = projector(encoder(x))``
    and ``K`` bank entries ``v_j`` drawn uniformly at random (shared by the batch)::

        loss = mean_i -log( exp(f_i . v_i / t) / (exp(f_i . v_i / t) + sum_j exp(f_i . v_j / t)) )

    (the non-parametric softmax estimated with sampled entries, as InfoNCE:
    :func:`toolkit.losses.info_nce`). Then ``v_i <- normalise(m * v_i + (1 - m) * f_i)`` with
    ``bank_momentum`` ``m`` = 0.5. Every view of ``batch.views`` is a query for its item's entry
    (the paper uses one view; with more, the bank is updated with their mean). The bank is a
    buffer, so checkpoints hold it. Needs ``batch.index`` (dataset positions, ``(N,)``).

    Under torchrun the ``K`` entries are drawn once, on rank 0, for every process, and the bank
    is updated with the features of the global batch, so every process holds the same bank and
    ``W`` processes train like one.

    >>> objective = InstDisc(projector, dataset_size=50000, num_negatives=4096)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        projector: Projector,
        dataset_size: int,
        temperature: Temperature = 0.07,
        num_negatives: Positive = 4096,
        bank_momentum: Annotated[float, Interval(ge=0, lt=1)] = 0.5,
    ) -> None:
        super().__init__()
        self.temperature, self.num_negatives, self.bank_momentum = temperature, num_negatives, bank_momentum
        self.bank = MemoryBank(dataset_size, projector.output_dim)

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        features = embed_views(batch.views, encoder, projector)
        positives = self.bank.vectors[batch.index].clone()
        sampled = distributed.broadcast_from_main(
            torch.randint(len(self.bank), (self.num_negatives,), device=positives.device))
        negatives = self.bank.vectors[sampled].clone()
        results = [info_nce(f, positives, self.temperature, negatives=negatives, in_batch=False) for f in features]
        loss = torch.stack([r[0] for r in results]).mean()
        accuracy = torch.stack([r[1] for r in results]).mean()
        mean_feature = torch.stack([F.normalize(f.detach().float(), dim=1) for f in features]).mean(dim=0)
        index = distributed.all_gather(batch.index.to(mean_feature.device))
        self.bank.update(index, distributed.all_gather(mean_feature), self.bank_momentum)
        return ObjectiveOutput(loss, {"contrastive_acc": accuracy})
