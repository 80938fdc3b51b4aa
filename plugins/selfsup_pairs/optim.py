"""AdamW with a learning rate per tower of a two-tower encoder."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt, Interval
from torch import nn

from selfsup_pairs.encoders import TOWERS, towers_of

Beta = Annotated[float, Interval(ge=0, lt=1)]
Scale = Annotated[float, Ge(0)]


def adamw_towers(
    params: list[dict],
    model: nn.Module | None = None,
    lr: Annotated[float, Gt(0)] = 5e-4,
    betas: tuple[Beta, Beta] = (0.9, 0.98),
    eps: Annotated[float, Gt(0)] = 1e-6,
    weight_decay: Annotated[float, Ge(0)] = 0.2,
    image_lr_scale: Scale = 1.0,
    text_lr_scale: Scale = 1.0,
) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019) with CLIP's settings and one learning rate per tower.

    CLIP (Radford et al. 2021, appendix F, table 18) uses decoupled weight decay 0.2 and Adam
    ``betas (0.9, 0.999)``, ``eps 1e-8`` for its ResNets, ``(0.9, 0.98)``, ``1e-6`` for its Vision
    Transformers; the defaults are the latter (a transformer tower is always one of the two here,
    and the lower ``beta2`` is the more stable).

    The parameters of the two-tower encoder's image tower train at ``lr * image_lr_scale``,
    those of its text tower at ``lr * text_lr_scale``; everything else (the towers' projections,
    the objective's temperature and bias) at ``lr``. A pretrained tower fine-tuned next to one
    trained from scratch usually wants a smaller scale (0.1, say); ``encoder.lock`` freezes a
    tower instead (LiT). The engine's split stays: biases, normalisation parameters and the
    objective's scalars get no weight decay. Every group follows the warmup + cosine schedule.
    Groups are ordered ``rest, image, text`` (the logged ``lr`` is the base one) and carry
    their ``tower`` name.
    """
    two_tower = towers_of(model) if model is not None else None
    if two_tower is None:
        raise ValueError("optimizer adamw-towers sets a learning rate per tower of a two-tower encoder, and the "
                         "recipe's encoder is not one; use optimizer: {name: adamw}")
    owner = {id(p): name for name in TOWERS for p in two_tower.tower(name).parameters()}
    scales = {"rest": 1.0, "image": image_lr_scale, "text": text_lr_scale}
    groups = []
    for tower, scale in scales.items():
        for group in params:
            mine = [p for p in group["params"] if owner.get(id(p), "rest") == tower]
            if mine:
                groups.append({**group, "params": mine, "lr": lr * scale, "tower": tower})
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
