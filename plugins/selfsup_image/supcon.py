"""Supervised contrastive learning: every same-label view in the batch is a positive."""

from __future__ import annotations

import torch

from toolkit.compatibility import Contract, declare
from toolkit.distributed import gather_with_grad
from toolkit.limits import Temperature
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import supervised_nt_xent

from toolkit.views import embed_views


@declare(Contract(consumes={"tensor"}))
class SupCon(Objective):
    """SupCon (Khosla et al. 2020, "Supervised Contrastive Learning", eq. 2, ``L_out``).

    ``z = projector(encoder(x))`` for all ``V`` views of the ``N`` items (``V * N`` anchors); an
    anchor's positives ``P(a)`` are every other view whose item has the same label::

        loss = mean_a  -1/|P(a)| sum_{p in P(a)} log( exp(u_a . u_p / t) / sum_{b != a} exp(u_a . u_b / t) )

    (:func:`toolkit.losses.supervised_nt_xent`). With all labels distinct it is SimCLR's NT-Xent.
    Labels come from the data source (``batch.labels: (N,)``); any ``V >= 1`` works, including
    multi-crop. Under torchrun the embeddings and labels of every process are gathered, so the
    positives and negatives are those of the global batch. The paper uses ``temperature`` 0.1 on
    CIFAR (0.07 on ImageNet). The second stage (a linear classifier on the frozen encoder) is the
    recipe's ``linear-probe`` evaluator.

    >>> objective = SupCon(temperature=0.1)
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.labels required
    """

    def __init__(self, temperature: Temperature = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        if batch.labels is None:
            raise ValueError("supcon needs labels, but the data source gives none; use a labelled data source "
                             "(image-jpeg-npz / image-npz with y_<split>, image-folder) or objective: {name: nt-xent}")
        z = gather_with_grad(torch.stack(embed_views(batch.views, encoder, projector)), dim=1)  # (V, N, D)
        labels = gather_with_grad(batch.labels)  # the global batch's labels, in the same order
        z, groups = z.reshape(-1, z.shape[-1]), labels.repeat(len(batch.views))
        loss, accuracy = supervised_nt_xent(z, groups, self.temperature)
        return ObjectiveOutput(loss, {"contrastive_acc": accuracy})
