"""SimCSE's objective (Gao et al. 2021): InfoNCE between two encodings of each sentence."""

from __future__ import annotations

import torch

from toolkit.compatibility import Contract, declare
from toolkit.distributed import gather_with_grad
from toolkit.limits import NonNegativeFloat, Temperature
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.losses import info_nce
from toolkit.views import embed_views


@declare(Contract(consumes={"tensor", "tokens"}, min_views=2, max_views=3))
class SimCSE(Objective):
    """In-batch InfoNCE over sentence embeddings, ``temperature`` 0.05 as in the paper.

    With ``z_v = projector(encoder(view_v)): (N, D)`` and ``s(a, b) = cos(a, b) / temperature``:

    - two views (unsupervised: the same sentence twice, dropout as noise; or a positive pair)::

        loss = mean_i -log( exp(s(z1_i, z2_i)) / sum_j exp(s(z1_i, z2_j)) )

    - three views (supervised: anchor, entailment, contradiction) add every row's
      contradiction ``z3`` to the denominator as hard negatives, row ``i``'s own one with its
      logit raised by ``hard_negative_weight`` (the SimCSE code's ``hard_negative_weight``,
      0 by default)::

        loss = mean_i -log( e^{s(z1_i, z2_i)} / (sum_j e^{s(z1_i, z2_j)} + sum_j e^{s(z1_i, z3_j) + w [i = j]}) )

    All views go through the encoder in one forward pass (rows padded to a common length), as
    in the SimCSE code; dropout masks are drawn per row, so the two views of a sentence differ.
    Under DDP the embeddings of every process are gathered (with gradients), so the negatives
    are the whole global batch, as in the SimCSE code.
    Logs ``accuracy``: how often the positive is the top candidate.

    Usage: ``objective: {name: simcse, temperature: 0.05}`` with ``augmentation: {name: simcse}``.
    """

    def __init__(self, temperature: Temperature = 0.05, hard_negative_weight: NonNegativeFloat = 0.0) -> None:
        super().__init__()
        self.temperature, self.hard_negative_weight = temperature, hard_negative_weight

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        views = len(batch.views)
        if views not in (2, 3):
            raise ValueError(f"simcse needs 2 views (unsupervised) or 3 (anchor, positive, hard negative), got "
                             f"{views}; set augmentation.n_views")
        z = gather_with_grad(torch.stack(embed_views(batch.views, encoder, projector)), dim=1)  # (V, N_global, D)
        anchor, positive = z[0], z[1]
        hard = z[2] if views == 3 else None
        loss, accuracy = info_nce(anchor, positive, self.temperature, hard_negatives=hard,
                                  hard_negative_weight=self.hard_negative_weight)
        return ObjectiveOutput(loss, {"accuracy": accuracy})
