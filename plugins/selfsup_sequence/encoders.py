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
from toolkit.extras import require
from toolkit.interfaces import Encoder
from toolkit.limits import Positive

Pooling = Literal["mean", "last", "mean+std", "sequence"]
Features = Literal["context", "local", "both"]
Frontend = Literal["waveform", "log-mel"]


@declare(Contract(consumes={"sequence"}, produces={"tensor", "cpc"}))
class CPCEncoder(Encoder):
    """``x: (N, C, L) -> h``: optional front end, conv stack ``g_enc``, causal context network ``g_ar``, pooling.

    The conv stack has no padding, so for kernels ``k_i`` and strides ``s_i``

    - receptive field ``R = 1 + sum_i (k_i - 1) * prod_{j<i} s_j`` input frames,
    - hop ``S = prod_i s_i`` input frames between output frames,
    - ``T = floor((F - R) / S) + 1`` frames for ``F >= R`` input frames (shorter inputs are
      zero-padded to ``R``, giving one frame).

    The input frames are the samples themselves, or with a ``frontend`` (:class:`LogMel`) its
    ``F = floor(L / hop) + 1`` spectrogram frames.

    ``features`` chooses what is pooled: the context ``c`` (``context``, CPC's representation),
    the local features ``z`` (``local``) or both concatenated (``both``). ``pooling``:
    ``sequence`` returns ``(N, T, D)`` (``output_kind = "sequence"``; in a padded batch the
    frames past an item's end then encode padding); ``mean`` (the masked mean over valid
    frames), ``last`` (the last valid frame) and ``mean+std`` (mean and standard deviation over
    valid frames, concatenated: ``2 D``) return vectors. ``standardize`` z-scores every channel
    of every item over its valid samples first. With ``context: none``, ``c = z``.
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
        features: Features = "context",
        frontend: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(kernels) != len(strides) or not kernels:
            raise ValueError(f"encoder.kernels ({list(kernels)}) and encoder.strides ({list(strides)}) must be "
                             f"non-empty lists of the same length")
        if pooling not in ("mean", "last", "mean+std", "sequence"):
            raise ValueError(f"encoder.pooling must be mean, last, mean+std or sequence; got {pooling!r}")
        if features not in ("context", "local", "both"):
            raise ValueError(f"encoder.features must be context, local or both; got {features!r}")
        self.frontend = frontend
        layers: list[nn.Module] = []
        width = in_channels * (frontend.channels if frontend is not None else 1)
        for kernel, stride in zip(kernels, strides):
            layers += [nn.Conv1d(width, channels, kernel, stride), ChannelNorm(channels), nn.ReLU()]
            width = channels
        self.g_enc = nn.Sequential(*layers)
        self.g_ar = build_context(context, channels, hidden_dim, context_layers, heads)
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        self.in_channels, self.z_dim, self.pooling, self.standardize = in_channels, channels, pooling, standardize
        self.features = features
        self.c_dim = channels if context == "none" else hidden_dim
        frame_dim = {"context": self.c_dim, "local": channels, "both": self.c_dim + channels}[features]
        self.output_dim = frame_dim * (2 if pooling == "mean+std" else 1)
        self.output_kind = "sequence" if pooling == "sequence" else "vector"
        self.input_spec = {"sample_rate": sample_rate} if sample_rate else {}

    @property
    def receptive_field(self) -> int:
        """``R``, the input frames one frame of ``z`` sees."""
        field, hop = 1, 1
        for kernel, stride in zip(self.kernels, self.strides):
            field, hop = field + (kernel - 1) * hop, hop * stride
        return field

    @property
    def hop(self) -> int:
        """``S``, the input frames between consecutive frames of ``z``."""
        return math.prod(self.strides)

    def output_length(self, length: int) -> int:
        """``T`` for an input of ``length`` samples (at least one frame)."""
        return int(self.valid_frames(torch.tensor([length]))[0])

    def valid_frames(self, lengths: Tensor) -> Tensor:
        """``T`` for every input length in samples ``(N,)``: at least one frame."""
        if self.frontend is not None:
            lengths = self.frontend.frames(lengths)
        return (lengths - self.receptive_field).clamp_min(0) // self.hop + 1

    def collate(self) -> Callable[[Sequence[Tensor]], Tensor]:
        return pad_with_nan

    def encode(self, x: Tensor) -> Tensor:
        """Local features ``z: (N, T, D)`` of ``x: (N, C, L)`` (NaN read as 0)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.in_channels}, L), got {tuple(x.shape)}; "
                             f"set encoder.in_channels to the data's channel count")
        lengths = valid_lengths(x)
        x = torch.nan_to_num(x, nan=0.0)
        if self.standardize:
            x = standardize_channels(x, lengths)
        if self.frontend is not None:
            x = self.frontend(x, lengths)
        if x.shape[2] < self.receptive_field:
            x = nn.functional.pad(x, (0, self.receptive_field - x.shape[2]))
        return self.g_enc(x).transpose(1, 2)

    def context(self, z: Tensor) -> Tensor:
        """Causal context ``c: (N, T, H)`` of ``z: (N, T, D)``; ``c_t`` depends on ``z_{<=t}`` only."""
        return self.g_ar(z)

    def forward(self, x: Tensor) -> Tensor:
        lengths = valid_lengths(x)
        z = self.encode(x)
        frames = z
        if self.features != "local":
            c = self.context(z)
            frames = c if self.features == "context" else torch.cat([z, c], dim=-1)
        if self.pooling == "sequence":
            return frames
        count = self.valid_frames(lengths).clamp(1, frames.shape[1]).to(frames.device)
        if self.pooling == "last":
            return frames[torch.arange(len(frames), device=frames.device), count - 1]
        valid = (torch.arange(frames.shape[1], device=frames.device)[None, :] < count[:, None])[..., None]
        mean = (frames * valid).sum(dim=1) / count[:, None].to(frames.dtype)
        if self.pooling == "mean":
            return mean
        var = ((frames - mean[:, None]).square() * valid).sum(dim=1) / count[:, None].to(frames.dtype)
        return torch.cat([mean, var.clamp_min(1e-12).sqrt()], dim=-1)  # no infinite gradient at 0


class LogMel(nn.Module):
    """Log mel spectrogram front end: ``x: (N, C, L) -> (N, C * n_mels, F)``,
    ``F = floor((L - window) / hop) + 1`` (inputs shorter than a window are zero-padded to one).

    Power spectrum ``|STFT|^2`` of ``window`` (25 ms, Hann) frames every ``hop`` (10 ms)
    samples, not centred (a frame sees only samples of the input, so a padded item keeps its
    frames), ``n_mels`` triangular mel filters (HTK scale, 0 Hz to
    Nyquist), then ``log(mel + 1e-6)``: the input of most audio encoders since Davis and
    Mermelstein (1980), and of CPC's successors trained on little speech. The filters are
    computed, not learned or saved. Needs torchaudio (``selfsup-toolkit[audio]``).
    """

    def __init__(self, sample_rate: int, n_mels: int, mean_norm: bool = False, window_ms: float = 25.0,
                 hop_ms: float = 10.0) -> None:
        super().__init__()
        self.mean_norm = mean_norm
        functional = require("torchaudio.functional", "the cpc-audio encoder's log-mel front end")
        self.hop_length, self.n_fft = int(sample_rate * hop_ms / 1000), int(sample_rate * window_ms / 1000)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        filters = functional.melscale_fbanks(self.n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
        self.register_buffer("filters", filters, persistent=False)  # (n_fft // 2 + 1, n_mels)
        self.channels = n_mels

    def frames(self, lengths: Tensor) -> Tensor:
        """Spectrogram frames ``F`` of inputs of ``lengths`` samples."""
        return (lengths - self.n_fft).clamp_min(0) // self.hop_length + 1

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x: (N, C, L)`` with ``lengths: (N,)`` valid samples (all of them when ``None``)."""
        n, c, length = x.shape
        if length < self.n_fft:
            x = nn.functional.pad(x, (0, self.n_fft - length))
        spectrum = torch.stft(x.float().reshape(n * c, -1), self.n_fft, self.hop_length, window=self.window,
                              center=False, return_complex=True).abs().square()
        mel = (spectrum.transpose(1, 2) @ self.filters).transpose(1, 2)  # (N C, n_mels, F)
        bands = torch.log(mel + 1e-6).reshape(n, -1, mel.shape[-1])
        if not self.mean_norm:
            return bands
        frames = self.frames(torch.full((n,), length) if lengths is None else lengths).clamp(1, bands.shape[-1])
        valid = (torch.arange(bands.shape[-1], device=x.device)[None, :] < frames[:, None].to(x.device))[:, None]
        mean = (bands * valid).sum(dim=-1, keepdim=True) / frames[:, None, None].to(bands)
        return (bands - mean) * valid


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
    """The CPC audio encoder over mono input ``(N, 1, L)`` at ``sample_rate`` (data sources resample).

    - ``frontend: log-mel`` (the default): ``n_mels`` log mel bands every 10 ms (:class:`LogMel`),
      then convs over frames (default kernels 3/3/3, strides 1/1/1: ``R = 7`` frames, 10 ms hop);
    - ``frontend: waveform`` (the paper's): convs over samples (default kernels 10/8/4/4/4,
      strides 5/4/2/2/2: ``R = 465``, ``S = 160``, 10 ms frames at 16 kHz).

    256 channels (512 in the paper, 256 in CPC_audio), a 256-unit GRU, and the pooled mean and
    standard deviation of ``[z, c]`` as the representation (``features: both``, ``pooling:
    mean+std``). On FSDD (18 minutes of speech) the waveform stack stays below MFCCs and the
    log-mel one beats them; benchmarks/README.md has the ablation.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        in_channels: int = 1,
        frontend: Frontend = "log-mel",
        n_mels: Positive = 40,
        mean_norm: bool = False,
        kernels: tuple[int, ...] | None = None,
        strides: tuple[int, ...] | None = None,
        channels: int = 256,
        context: ContextKind = "gru",
        hidden_dim: int = 256,
        context_layers: int = 1,
        heads: int = 4,
        pooling: Pooling = "mean+std",
        features: Features = "both",
        standardize: bool = False,
    ) -> None:
        if frontend not in ("waveform", "log-mel"):
            raise ValueError(f"encoder.frontend must be waveform or log-mel; got {frontend!r}")
        if mean_norm and frontend != "log-mel":
            raise ValueError("encoder.mean_norm normalises log-mel bands: set encoder.frontend: log-mel, or drop "
                             "mean_norm (encoder.standardize normalises a waveform)")
        default_kernels, default_strides = ((10, 8, 4, 4, 4), (5, 4, 2, 2, 2)) if frontend == "waveform" else (
            (3, 3, 3), (1, 1, 1))
        front = LogMel(sample_rate, n_mels, mean_norm) if frontend == "log-mel" else None
        super().__init__(in_channels, kernels or default_kernels, strides or default_strides, channels, context,
                         hidden_dim, context_layers, heads, pooling, standardize, sample_rate=sample_rate,
                         features=features, frontend=front)


class CPCSeriesEncoder(CPCEncoder):
    """CPC for (multichannel) time series: convs over ``(N, C, L)`` (default kernels 4/3/3,
    strides 1/1/1: ``R = 8``, every time step kept, so a 7-step series still gives frames to
    predict), 64 channels, a 64-unit GRU, the mean and standard deviation of ``[z, c]`` pooled.
    ``standardize`` (per item and channel) is off by default: it erases the levels that tell
    many classes apart (UEA JapaneseVowels: linear probe 0.54 with it, 0.93 without, at random
    init); the channel norm after every conv already makes the encoder indifferent to scale."""

    def __init__(
        self,
        in_channels: int = 1,
        kernels: tuple[int, ...] = (4, 3, 3),
        strides: tuple[int, ...] = (1, 1, 1),
        channels: int = 64,
        context: ContextKind = "gru",
        hidden_dim: int = 64,
        context_layers: int = 1,
        heads: int = 4,
        pooling: Pooling = "mean+std",
        features: Features = "both",
        standardize: bool = False,
    ) -> None:
        super().__init__(in_channels, kernels, strides, channels, context, hidden_dim, context_layers, heads,
                         pooling, standardize, sample_rate=None, features=features)


def pad_with_nan(views: Sequence[Tensor]) -> Tensor:
    """Collate ``(C, L_i)`` views into ``(N, C, max L_i)``, right-padded with NaN."""
    views = list(views)
    longest = max(v.shape[-1] for v in views)
    out = torch.full((len(views), views[0].shape[0], longest), float("nan"), dtype=torch.float32)
    for i, view in enumerate(views):
        out[i, :, : view.shape[-1]] = view
    return out


def valid_lengths(x: Tensor) -> Tensor:
    """Samples before the trailing run of all-NaN columns of each item of ``x: (N, C, L)``: ``(N,)``."""
    present = ~torch.isnan(x).all(dim=1)
    last = present.shape[1] - present.flip(1).int().argmax(dim=1)
    return torch.where(present.any(dim=1), last, torch.zeros_like(last))


def standardize_channels(x: Tensor, lengths: Tensor) -> Tensor:
    """Per item and channel: ``(x - mean) / std`` over the first ``lengths`` samples; padding stays 0."""
    valid = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
    count = valid.sum(dim=2, keepdim=True).clamp_min(1)
    mean = (x * valid).sum(dim=2, keepdim=True) / count
    var = ((x - mean).square() * valid).sum(dim=2, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + 1e-6) * valid
