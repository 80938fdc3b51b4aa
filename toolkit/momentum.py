"""Momentum (EMA) target networks: MoCo's key encoder, BYOL's target network, DINO's teacher.

For online parameters ``theta`` and target parameters ``xi`` the update after each optimizer
step is ``xi <- m * xi + (1 - m) * theta`` (He et al. 2020, eq. 2; Grill et al. 2020, eq. 1).
``m`` is constant or follows BYOL's cosine increase to 1:
``m_k = 1 - (1 - m_base) * (cos(pi * k / K) + 1) / 2`` at (0-based) step ``k`` of ``K``.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import Tensor, nn

from toolkit.interfaces import Encoder, Projector, pool
from toolkit.limits import Momentum

MomentumSchedule = Literal["constant", "cosine"]


class MomentumTarget(nn.Module):
    """Frozen copies of an encoder and projector, moved towards the online ones by EMA.

    ``forward(x) -> (N, D)`` runs without gradient (``x`` whatever the encoder takes). The copies' parameters have
    ``requires_grad = False``, so the optimizer never sees them; their batch-norm statistics
    follow their own forward passes (as in MoCo and BYOL). The momentum last used is the buffer
    ``momentum``, so a checkpoint holds the schedule's position too.
    """

    def __init__(self, encoder: Encoder, projector: Projector, base_momentum: Momentum,
                 schedule: MomentumSchedule = "constant") -> None:
        super().__init__()
        self.encoder, self.projector = frozen_copy(encoder), frozen_copy(projector)
        self.base_momentum, self.schedule = base_momentum, schedule
        self.register_buffer("momentum", torch.tensor(base_momentum, dtype=torch.float32))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.projector(pool(self.encoder(x)))

    @torch.no_grad()
    def update(self, encoder: Encoder, projector: Projector, step: int, total_steps: int) -> None:
        """EMA update after optimizer step ``step`` (1-based) of ``total_steps``."""
        momentum = self.base_momentum
        if self.schedule == "cosine":
            momentum = cosine_momentum(self.base_momentum, step - 1, total_steps)
        ema_update(self.encoder, encoder, momentum)
        ema_update(self.projector, projector, momentum)
        self.momentum.fill_(momentum)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2``: ``base`` at 0, 1 at the end."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``xi <- momentum * xi + (1 - momentum) * theta`` for every parameter pair, in place."""
    target_params, online_params = list(target.parameters()), list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError(f"target has {len(target_params)} parameters, online {len(online_params)}: "
                         f"the target must be a copy of the online network")
    torch._foreach_lerp_(target_params, [p.detach() for p in online_params], 1.0 - momentum)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient."""
    copied = copy.deepcopy(module)
    copied.requires_grad_(False)
    return copied
