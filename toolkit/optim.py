"""Optimizers (SGD, AdamW, LARS), their default parameter groups, and the warmup + cosine
learning-rate schedule.

The optimizers are components the core plugin registers (``register_optimizers``), so a plugin
can add its own; a recipe's ``optimizer:`` block names one. Biases and normalisation parameters
get no weight decay (and, for LARS, no layer-wise adaptation), as in SimCLR and BYOL.
"""

from __future__ import annotations

import math
from typing import Annotated, Callable, Iterable

import torch
from annotated_types import Ge, Gt, Interval
from torch import Tensor, nn

LearningRate = Annotated[float, Gt(0)]
Momentum = Annotated[float, Interval(ge=0, le=1)]
WeightDecay = Annotated[float, Ge(0)]


def sgd(
    params: list[dict],
    lr: LearningRate = 0.03,
    momentum: Momentum = 0.9,
    weight_decay: WeightDecay = 5e-4,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def adamw(
    params: list[dict],
    lr: LearningRate = 1e-3,
    betas: tuple[Annotated[float, Interval(ge=0, lt=1)], Annotated[float, Interval(ge=0, lt=1)]] = (0.9, 0.999),
    weight_decay: WeightDecay = 0.05,
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


def lars(
    params: list[dict],
    lr: LearningRate = 0.3,
    momentum: Momentum = 0.9,
    weight_decay: WeightDecay = 1e-6,
    trust_coefficient: Annotated[float, Gt(0)] = 0.001,
) -> torch.optim.Optimizer:
    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)


def parameter_groups(modules: Iterable[nn.Module]) -> list[dict]:
    """Trainable parameters split into a decayed group and a no-decay group (biases, norms).

    The no-decay group is flagged ``lars_exclude`` so LARS leaves it unadapted.
    """
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for parameter in module.parameters():
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017, "Large Batch Training of CNNs").

    For each parameter ``w`` with gradient ``g`` (weight decay ``wd`` folded in):
    ``g' = g + wd * w``; ``trust = eta * ||w|| / ||g'||`` (1 when either norm is 0);
    ``v = momentum * v + trust * g'``; ``w = w - lr * v``. Groups flagged ``lars_exclude``
    use ``trust = 1`` (plain SGD with momentum).
    """

    def __init__(
        self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def warmup_cosine(total_steps: int, warmup_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """LR multiplier at optimizer step ``s`` (0-based): linear warmup, then cosine decay.

    ``s < W``: ``(s + 1) / W``; else ``r + (1 - r) * (1 + cos(pi * (s - W) / (T - W))) / 2``
    with ``r = min_lr_ratio``, ``T = total_steps``, ``W = warmup_steps``.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
