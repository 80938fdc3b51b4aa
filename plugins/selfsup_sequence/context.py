"""Causal autoregressive context networks ``g_ar``: ``z: (N, T, D) -> c: (N, T, H)``.

CPC (van den Oord et al. 2018, sec. 2) summarises the local features ``z_{<=t}`` into a context
``c_t``. Every network here is causal: ``c_t`` depends on ``z_1..z_t`` only, which the tests check
by changing the input after ``t``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

ContextKind = Literal["gru", "lstm", "transformer", "none"]


def build_context(kind: ContextKind, input_dim: int, hidden_dim: int, layers: int, heads: int) -> nn.Module:
    """The context network named ``kind``; ``none`` passes ``z`` through (``hidden_dim == input_dim``)."""
    if kind == "gru":
        return _Recurrent(nn.GRU(input_dim, hidden_dim, num_layers=layers, batch_first=True))
    if kind == "lstm":
        return _Recurrent(nn.LSTM(input_dim, hidden_dim, num_layers=layers, batch_first=True))
    if kind == "transformer":
        return CausalTransformer(input_dim, hidden_dim, layers, heads)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"encoder.context must be one of gru, lstm, transformer, none; got {kind!r}")


class CausalTransformer(nn.Module):
    """A pre-norm transformer with a causal attention mask and sinusoidal positions.

    ``z: (N, T, D) -> c: (N, T, H)``: a linear map to ``H``, sinusoidal position encodings
    (Vaswani et al. 2017), then ``layers`` blocks whose attention only sees positions ``<= t``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, layers: int, heads: int) -> None:
        super().__init__()
        if hidden_dim % heads:
            raise ValueError(f"encoder.hidden_dim ({hidden_dim}) must be divisible by encoder.heads ({heads})")
        self.inp = nn.Linear(input_dim, hidden_dim)
        block = nn.TransformerEncoderLayer(hidden_dim, heads, 4 * hidden_dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, z: Tensor) -> Tensor:
        steps = z.shape[1]
        h = self.inp(z) + _sinusoids(steps, self.inp.out_features, z.device).to(z.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=z.device, dtype=h.dtype)
        return self.norm(self.blocks(h, mask=mask, is_causal=True))


class _Recurrent(nn.Module):
    """A batch-first GRU or LSTM returning only its output sequence (causal by construction)."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, z: Tensor) -> Tensor:
        return self.rnn(z)[0]


def _sinusoids(steps: int, dim: int, device: torch.device) -> Tensor:
    """Position encodings ``(steps, dim)``: ``sin/cos(t / 10000^(2i/dim))``."""
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table
