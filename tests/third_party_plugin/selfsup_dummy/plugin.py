"""Registers the ``dummy-cosine`` objective; declared as the ``dummy`` entry point of selfsup-dummy."""

from __future__ import annotations

import torch.nn.functional as F

from toolkit import Batch, Encoder, Objective, ObjectiveOutput, Projector, hookimpl
from toolkit.hookspecs import Register
from toolkit.interfaces import pool


class DummyCosine(Objective):
    """Negative cosine similarity between the projections of views 0 and 1:
    ``loss = -mean_i cos(z0_i, z1_i)`` with ``z_v = projector(encoder(views[v]))``, ``z_v: (N, D)``.

    >>> objective = DummyCosine()
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: V x (N, ...), V >= 2
    """

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        z0 = projector(pool(encoder(batch.views[0])))
        z1 = projector(pool(encoder(batch.views[1])))
        similarity = F.cosine_similarity(z0, z1, dim=-1).mean()
        return ObjectiveOutput(-similarity, {"cosine": similarity.detach()})


@hookimpl
def register_objectives(register: Register) -> None:
    register("dummy-cosine", DummyCosine)
