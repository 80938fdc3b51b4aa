"""CPC encoders: a strided 1-D conv stack ``g_enc`` and a causal context network ``g_ar`` in one
:class:`~toolkit.interfaces.Encoder` (van den Oord et al. 2018, "Representation Learning with
Contrastive Predictive Coding", sec. 2 and 3.1).

CPC's downstream representation is the context ``c_t``, and evaluation and export use the encoder
only, so ``g_ar`` lives here rather than in the projector slot. The CPC objective calls
:meth:`CPCEncoder.encode` (``x -> z``) and :meth:`CPCEncoder.context` (``z -> c``) itself.

Variable lengths: ``collate()`` right-pads a batch with NaN (the UCR convention for missing
values); ``forward`` treats trailing all-NaN samples as padding, encodes zeros there and pools
over the valid frames only, so a padded item gets the features it would get alone (up to the
zeros its last frames see through the receptive field).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from selfsup_sequence.context import ContextKind, build_context
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Encoder

Pooling = Literal["mean", "last", "sequence"]


@declare(Contract(consumes={"sequence"}, produces={"tensor", "cpc"}))
class CPCEncoder(Encoder):
    """``x: (N, C, L) -> c``: conv stack, channel normalisation, causal context network, pooling.

    The conv stack has no padding, so for kernels ``k_i`` and strides ``s_i``

    - receptive field ``R = 1 + sum_i (k_i - 1) * prod_{j<i} s_j`` samples,
    - hop ``S = prod_i s_i`` samples between frames,
    - ``T = floor((L - R) / S) + 1`` frames for ``L >= R`` (inputs shorter than ``R`` are
      zero-padded to ``R``, giving one frame).

    ``pooling``: ``sequence`` returns ``c: (N, T, H)`` (``output_kind = "sequence"``; in a padded
    batch the frames past an item's end then encode padding); ``mean``
    (the masked mean over valid frames) and ``last`` (``c`` at the last valid frame) return
    ``(N, H)`` vectors. ``standardize`` z-scores every channel of every item over its valid
    samples first (for time series whose scale varies). With ``context: none``, ``c = z``.
    """

    def __init__(
        self,
        in_channels: int,
        kernels: Sequence[int],
        strides: Sequence[int],
        channels: int,
        context: ContextKind,
        hidden_dim: int,
        context_layers: int,
        heads: int,
        pooling: Pooling,
        standardize: bool,
        sample_rate: int | None,
    ) -> None:
        super().__init__()
        if len(kernels) != len(strides) or not kernels:
            raise ValueError(f"encoder.kernels ({list(kernels)}) and encoder.strides ({list(strides)}) must be "
                             f"non-empty lists of the same length")
        if pooling not in ("mean", "last", "sequence"):
            raise ValueError(f"encoder.pooling must be mean, last or sequence; got {pooling!r}")
        layers: list[nn.Module] = []
        width = in_channels
        for kernel, stride in zip(kernels, strides):
            layers += [nn.Conv1d(width, channels, kernel, stride), ChannelNorm(channels), nn.ReLU()]
            width = channels
        self.g_enc = nn.Sequential(*layers)
        self.g_ar = build_context(context, channels, hidden_dim, context_layers, heads)
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        self.in_channels, self.z_dim, self.pooling, self.standardize = in_channels, channels, pooling, standardize
        self.output_dim = channels if context == "none" else hidden_dim
        self.output_kind = "sequence" if pooling == "sequence" else "vector"
        self.input_spec = {"sample_rate": sample_rate} if sample_rate else {}

    @property
    def receptive_field(self) -> int:
        """``R``, the input samples one frame of ``z`` sees."""
        field, hop = 1, 1
        for kernel, stride in zip(self.kernels, self.strides):
            field, hop = field + (kernel - 1) * hop, hop * stride
        return field

    @property
    def hop(self) -> int:
        """``S``, the input samples between consecutive frames."""
        return math.prod(self.strides)

    def output_length(self, length: int) -> int:
        """``T`` for an input of ``length`` samples (at least one frame)."""
        return max(length - self.receptive_field, 0) // self.hop + 1

    def collate(self) -> Callable[[Sequence[Tensor]], Tensor]:
        return pad_with_nan

    def encode(self, x: Tensor) -> Tensor:
        """Local features ``z: (N, T, D)`` of ``x: (N, C, L)`` (NaN read as 0)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.in_channels}, L), got {tuple(x.shape)}; "
                             f"set encoder.in_channels to the data's channel count")
        lengths = _valid_lengths(x)
        x = torch.nan_to_num(x, nan=0.0)
        if self.standardize:
            x = _standardize(x, lengths)
        if x.shape[2] < self.receptive_field:
            x = nn.functional.pad(x, (0, self.receptive_field - x.shape[2]))
        return self.g_enc(x).transpose(1, 2)

    def context(self, z: Tensor) -> Tensor:
        """Causal context ``c: (N, T, H)`` of ``z: (N, T, D)``; ``c_t`` depends on ``z_{<=t}`` only."""
        return self.g_ar(z)

    def forward(self, x: Tensor) -> Tensor:
        lengths = _valid_lengths(x)
        c = self.context(self.encode(x))
        if self.pooling == "sequence":
            return c
        frames = ((lengths - self.receptive_field).clamp_min(0) // self.hop + 1).clamp(1, c.shape[1]).to(c.device)
        if self.pooling == "last":
            return c[torch.arange(len(c), device=c.device), frames - 1]
        valid = torch.arange(c.shape[1], device=c.device)[None, :] < frames[:, None]
        return (c * valid[..., None]).sum(dim=1) / frames[:, None].to(c.dtype)


class ChannelNorm(nn.Module):
    """Normalises every time step over channels, with a per-channel affine (CPC_audio's
    ``ChannelNorm``): ``y = (x - mean_c x) / sqrt(var_c x + eps) * w + b`` for ``x: (N, C, T)``."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        # layer_norm over the channel axis is exactly this normalisation, fused
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class CPCAudioEncoder(CPCEncoder):
    """The CPC audio encoder: five convs (kernels 10/8/4/4/4, strides 5/4/2/2/2: ``R = 465``,
    ``S = 160``, 10 ms frames at 16 kHz), 512 channels in the paper, 256 in CPC_audio and here,
    and a 256-unit GRU. Mono input ``(N, 1, L)`` at ``sample_rate`` (data sources resample)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        in_channels: int = 1,
        kernels: tuple[int, ...] = (10, 8, 4, 4, 4),
        strides: tuple[int, ...] = (5, 4, 2, 2, 2),
        channels: int = 256,
        context: ContextKind = "gru",
        hidden_dim: int = 256,
        context_layers: int = 1,
        heads: int = 4,
        pooling: Pooling = "mean",
    ) -> None:
        super().__init__(in_channels, kernels, strides, channels, context, hidden_dim, context_layers, heads,
                         pooling, standardize=False, sample_rate=sample_rate)


class CPCSeriesEncoder(CPCEncoder):
    """CPC for (multichannel) time series: configurable convs over ``(N, C, L)``, per-item
    channel standardisation on by default, a 64-unit GRU. The default stack (kernels 4/3/3,
    strides 2/1/1) has ``R = 12``, ``S = 2``: a 150-sample GunPoint series gives 70 frames."""

    def __init__(
        self,
        in_channels: int = 1,
        kernels: tuple[int, ...] = (4, 3, 3),
        strides: tuple[int, ...] = (2, 1, 1),
        channels: int = 64,
        context: ContextKind = "gru",
        hidden_dim: int = 64,
        context_layers: int = 1,
        heads: int = 4,
        pooling: Pooling = "mean",
        standardize: bool = True,
    ) -> None:
        super().__init__(in_channels, kernels, strides, channels, context, hidden_dim, context_layers, heads,
                         pooling, standardize, sample_rate=None)


def pad_with_nan(views: Sequence[Tensor]) -> Tensor:
    """Collate ``(C, L_i)`` views into ``(N, C, max L_i)``, right-padded with NaN."""
    views = list(views)
    longest = max(v.shape[-1] for v in views)
    out = torch.full((len(views), views[0].shape[0], longest), float("nan"), dtype=torch.float32)
    for i, view in enumerate(views):
        out[i, :, : view.shape[-1]] = view
    return out


def _valid_lengths(x: Tensor) -> Tensor:
    """Samples before the trailing run of all-NaN columns of each item of ``x: (N, C, L)``: ``(N,)``."""
    present = ~torch.isnan(x).all(dim=1)
    last = present.shape[1] - present.flip(1).int().argmax(dim=1)
    return torch.where(present.any(dim=1), last, torch.zeros_like(last))


def _standardize(x: Tensor, lengths: Tensor) -> Tensor:
    """Per item and channel: ``(x - mean) / std`` over the first ``lengths`` samples; padding stays 0."""
    valid = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
    count = valid.sum(dim=2, keepdim=True).clamp_min(1)
    mean = (x * valid).sum(dim=2, keepdim=True) / count
    var = ((x - mean).square() * valid).sum(dim=2, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + 1e-6) * valid
