"""Modality-agnostic projector heads: identity and the MLP of SimCLR, MoCo v2, BYOL, SimSiam."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge
from torch import Tensor, nn

from toolkit.interfaces import Projector


class IdentityProjector(Projector):
    """``z = h``: for objectives that work on the representation itself."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.output_dim = input_dim

    def forward(self, h: Tensor) -> Tensor:
        return h


class MLPProjector(Projector):
    """``layers`` linear layers, ``h: (N, input_dim) -> z: (N, output_dim)``.

    Hidden layers are ``Linear -> [BatchNorm1d] -> ReLU``; the last is ``Linear`` followed by
    ``BatchNorm1d`` only when ``output_batch_norm`` (SimSiam). SimCLR (Chen et al. 2020):
    ``layers=2, hidden_dim=2048, output_dim=128``; MoCo v2: ``batch_norm=false``; BYOL:
    ``hidden_dim=4096, output_dim=256``. Sequence inputs ``(N, T, D)`` are projected per step.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: Annotated[int, Ge(1)] = 2048,
        output_dim: Annotated[int, Ge(1)] = 128,
        layers: Annotated[int, Ge(1)] = 2,
        batch_norm: bool = True,
        output_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = input_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden_dim, bias=not batch_norm)]
            blocks += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            blocks += [nn.ReLU(inplace=True)]
            width = hidden_dim
        blocks.append(nn.Linear(width, output_dim, bias=not output_batch_norm))
        if output_batch_norm:
            blocks.append(nn.BatchNorm1d(output_dim, affine=False))
        self.net = nn.Sequential(*blocks)
        self.output_dim = output_dim

    def forward(self, h: Tensor) -> Tensor:
        if h.dim() == 3:
            n, t, d = h.shape
            return self.net(h.reshape(n * t, d)).reshape(n, t, -1)
        return self.net(h)
