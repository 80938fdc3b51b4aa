"""MoCo v2: a momentum key encoder and a queue of keys as InfoNCE negatives."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector, pool
from toolkit.losses import info_nce

from selfsup_image.momentum import MomentumSchedule, MomentumTarget
from selfsup_image.queue import KeyQueue


class MoCo(Objective):
    """MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines with
    Momentum Contrastive Learning").

    Queries ``q = projector(encoder(x_1))`` and keys ``k = target(x_2)`` from the momentum copy
    of encoder and projector; with the queue's keys ``{k_j}`` as negatives::

        loss = mean_i -log( exp(q_i . k_i / t) / (exp(q_i . k_i / t) + sum_j exp(q_i . k_j / t)) )

    (:func:`toolkit.losses.info_nce` with ``in_batch=False``), then the batch's normalised keys
    are enqueued. ``symmetric`` adds the loss with the views swapped, ``L = L_12 + L_21``, and
    enqueues both views' keys (the MoCo CIFAR-10 demo's option; its learning rate assumes the
    sum). After each optimizer step the target moves by EMA with ``momentum`` (0.999 for
    ImageNet, 0.99 for CIFAR-10), constant or cosine-increased to 1.

    Shuffle-BN (MoCo section 3.3) is emulated on one process: queries and keys are encoded in
    ``bn_groups`` chunks with separate batch-norm statistics, the keys after a random shuffle
    of the batch, so that a query and its key never share statistics. ``bn_groups: 1`` encodes
    each view in one pass (no shuffle-BN).

    ``queue_size`` (65536 in the paper) is clipped to the data set's size. Views: ``(N, C, H, W)``
    each; the first two are used.

    >>> objective = MoCo(encoder, projector, dataset_size=50000, queue_size=4096, momentum=0.99)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        encoder: Encoder,
        projector: Projector,
        dataset_size: int,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.999,
        momentum_schedule: MomentumSchedule = "constant",
        symmetric: bool = False,
        bn_groups: int = 8,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"objective.temperature must be positive, got {temperature}")
        if bn_groups < 1:
            raise ValueError(f"objective.bn_groups must be at least 1 (1 turns shuffle-BN off), got {bn_groups}")
        self.temperature, self.symmetric, self.bn_groups = temperature, symmetric, bn_groups
        self.target = MomentumTarget(encoder, projector, momentum, momentum_schedule)
        self.queue = KeyQueue(min(queue_size, dataset_size), projector.output_dim)
        self._online = (encoder, projector)  # a plain tuple: referenced, not registered twice

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        if len(batch.views) < 2:
            raise ValueError("moco needs 2 views per item; set augmentation.n_views: 2")
        x1, x2 = batch.views[0], batch.views[1]

        def online(x: Tensor) -> Tensor:
            return projector(pool(encoder(x)))

        negatives = self.queue.keys.clone()
        q1 = _in_groups(online, x1, self.bn_groups, shuffle=False)
        k2 = _in_groups(self.target, x2, self.bn_groups, shuffle=True)
        loss, accuracy = info_nce(q1, k2, self.temperature, negatives=negatives, in_batch=False)
        keys = [k2]
        if self.symmetric:
            q2 = _in_groups(online, x2, self.bn_groups, shuffle=False)
            k1 = _in_groups(self.target, x1, self.bn_groups, shuffle=True)
            loss_21, accuracy_21 = info_nce(q2, k1, self.temperature, negatives=negatives, in_batch=False)
            loss, accuracy = loss + loss_21, (accuracy + accuracy_21) / 2
            keys.append(k1)
        self.queue.enqueue(F.normalize(torch.cat(keys).float(), dim=1))
        return ObjectiveOutput(loss, {"contrastive_acc": accuracy, "momentum": float(self.target.momentum)})

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        self.target.update(*self._online, step, total_steps)


def _in_groups(net: Callable[[Tensor], Tensor], x: Tensor, groups: int, shuffle: bool) -> Tensor:
    """``net(x)`` computed in ``groups`` chunks (separate batch-norm statistics), optionally over a
    random permutation of the batch that is undone on the output."""
    if groups == 1:
        return net(x)
    if not shuffle:
        return torch.cat([net(chunk) for chunk in x.chunk(groups)])
    order = torch.randperm(x.shape[0], device=x.device)
    return torch.cat([net(chunk) for chunk in x[order].chunk(groups)])[order.argsort()]
