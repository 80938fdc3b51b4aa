"""MoCo v2: a momentum key encoder and a queue of keys as InfoNCE negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.compatibility import Contract, declare
from toolkit import distributed
from toolkit.limits import Momentum, Positive, Temperature
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector, pool
from toolkit.losses import info_nce

from toolkit.momentum import MomentumSchedule, MomentumTarget
from toolkit.memory import KeyQueue


@declare(Contract(consumes={"tensor"}, min_views=2, max_views=2))
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

    Shuffle-BN (MoCo section 3.3): the global batch is encoded in ``bn_groups`` chunks with
    separate batch-norm statistics, queries in batch order and keys after a random shuffle of
    the global batch (undone on the output), so that a query and its key never share
    statistics. On one process the groups are chunks of one pass each; on ``W`` processes each
    process encodes ``bn_groups / W`` of them (the paper's setting is one group per GPU,
    ``bn_groups = W``): the key inputs are gathered, shuffled by one permutation drawn on rank
    0, and the keys gathered back, as in the official code, so a run on ``W`` processes
    matches one process with the same ``bn_groups``. ``bn_groups: 1`` turns shuffle-BN off
    (each process then normalises its own shard, queries and keys alike).

    Keys are enqueued for the whole global batch, in its order, so every process holds the
    same queue.

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
        temperature: Temperature = 0.2,
        queue_size: Positive = 65536,
        momentum: Momentum = 0.999,
        momentum_schedule: MomentumSchedule = "constant",
        symmetric: bool = False,
        bn_groups: Positive = 8,
    ) -> None:
        super().__init__()
        processes = distributed.world_size()
        if bn_groups > 1 and bn_groups % processes:
            raise ValueError(f"objective.bn_groups ({bn_groups}) must be a multiple of the number of processes "
                             f"({processes}): each process encodes an equal share of the batch-norm groups "
                             f"(set bn_groups: {processes} for the paper's one group per process)")
        self.temperature, self.symmetric, self.bn_groups = temperature, symmetric, bn_groups
        self.target = MomentumTarget(encoder, projector, momentum, momentum_schedule)
        self.queue = KeyQueue(min(queue_size, dataset_size), projector.output_dim)

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        if len(batch.views) < 2:
            raise ValueError("moco needs 2 views per item; set augmentation.n_views: 2")
        x1, x2 = batch.views[0], batch.views[1]
        local_groups = max(self.bn_groups // distributed.world_size(), 1)
        mine = slice(distributed.rank() * len(batch), (distributed.rank() + 1) * len(batch))

        def online(x: Tensor) -> Tensor:
            return projector(pool(encoder(x)))

        negatives = self.queue.keys.clone()
        q1 = torch.cat([online(chunk) for chunk in x1.chunk(local_groups)])
        k2 = self._global_keys(x2)
        loss, accuracy = info_nce(q1, k2[mine], self.temperature, negatives=negatives, in_batch=False)
        keys = [k2]
        if self.symmetric:
            q2 = torch.cat([online(chunk) for chunk in x2.chunk(local_groups)])
            k1 = self._global_keys(x1)
            loss_21, accuracy_21 = info_nce(q2, k1[mine], self.temperature, negatives=negatives, in_batch=False)
            loss, accuracy = loss + loss_21, (accuracy + accuracy_21) / 2
            keys.append(k1)
        self.queue.enqueue(F.normalize(torch.cat(keys).float(), dim=1))
        return ObjectiveOutput(loss, {"contrastive_acc": accuracy, "momentum": float(self.target.momentum)})

    @torch.no_grad()
    def _global_keys(self, x: Tensor) -> Tensor:
        """Keys ``(W * N, D)`` of the global batch, in its order, from this process's ``x: (N, ...)``,
        encoded by the momentum target in shuffled batch-norm groups (shuffle-BN)."""
        if self.bn_groups == 1:
            return distributed.all_gather(self.target(x))
        inputs = distributed.all_gather(x)
        if distributed.is_distributed() and len(inputs) % self.bn_groups:
            raise ValueError(f"the global batch ({len(inputs)}) must be divisible by objective.bn_groups "
                             f"({self.bn_groups}) under torchrun: change trainer.batch_size or bn_groups")
        order = distributed.broadcast_from_main(torch.randperm(len(inputs), device=x.device))
        groups = inputs[order].chunk(self.bn_groups)
        share = self.bn_groups // distributed.world_size()
        own = groups[distributed.rank() * share:(distributed.rank() + 1) * share]
        keys = distributed.all_gather(torch.cat([self.target(group) for group in own]))
        return keys[order.argsort()]

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        self.target.update(encoder, projector, step, total_steps)
