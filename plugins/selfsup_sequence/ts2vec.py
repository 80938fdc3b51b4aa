"""TS2Vec: a dilated convolutional encoder trained with a hierarchical contrastive loss over two
overlapping random crops of each series (Yue et al. 2022, "TS2Vec: Towards Universal
Representation of Time Series", AAAI, sec. 3).

The encoder gives one representation per time step; the objective contrasts the two crops'
representations of the time steps they share, against other series at the same step
(instance-wise) and against other steps of the same series (temporal), at every scale of a max
pooling pyramid. The series-level representation downstream is the max over time.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup_sequence.encoders import pad_with_nan, standardize_channels, valid_lengths
from toolkit import distributed
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.limits import NonNegative, Positive, Probability

Pooling = Literal["max", "mean", "sequence"]


@declare(Contract(consumes={"sequence"}, produces={"tensor", "ts2vec"}))
class DilatedConvEncoder(Encoder):
    """TS2Vec's encoder: ``x: (N, C, L) -> h: (N, L, output_dim)`` per time step, then pooling.

    1. Every step with a missing value (NaN in any channel) is read as 0 and hidden.
    2. A linear input projection ``C -> hidden_dim`` per step; hidden steps (missing ones and
       those of ``mask``, TS2Vec's timestamp masking) are set to 0 after it.
    3. ``depth`` residual blocks of width ``hidden_dim``, then a final block to ``output_dim``;
       block ``i = 0..depth`` is ``x + conv_2(gelu(conv_1(gelu(x))))`` with two convs of kernel
       ``k`` and dilation ``2^i`` (a 1x1 conv on the residual when the widths differ, and in the
       final block, as TS2Vec). The convs are length preserving: padded on both sides ("same"),
       or on the left only with ``causal: true``, so that step ``t`` then sees steps ``<= t`` only.
    4. Dropout ``dropout`` (0.1) on the representations, in training only.

    The receptive field is ``R = 1 + 2 (k - 1) (2^(depth + 1) - 1)`` steps (8189 for the
    defaults ``k = 3``, ``depth = 10``): step ``t`` sees ``t - (R - 1) / 2 .. t + (R - 1) / 2``
    ("same", odd ``k``) or ``t - R + 1 .. t`` (causal).

    Variable lengths: trailing all-NaN columns are padding (``collate()`` pads with NaN), set to
    0 before every conv as the convs' own zero padding would be, so the valid steps of a padded
    item get the features they get alone. ``pooling``: ``max`` (TS2Vec's instance-level
    representation, over the whole series) or ``mean`` over the valid steps give ``(N,
    output_dim)``; ``sequence`` gives ``(N, L, output_dim)`` (padded steps included).
    ``standardize`` z-scores every channel of every item over its valid steps first (it uses
    the whole series, so it is not causal).

    >>> encoder = DilatedConvEncoder(in_channels=6)      # TS2Vec's defaults: 64 wide, depth 10, 320 out
    >>> encoder.encode(x, mask).shape                    # x: (8, 6, 100), mask: (8, 100) bool
    torch.Size([8, 100, 320])
    """

    def __init__(
        self,
        in_channels: Positive = 1,
        hidden_dim: Positive = 64,
        output_dim: Positive = 320,
        depth: NonNegative = 10,
        kernel_size: Positive = 3,
        causal: bool = False,
        pooling: Pooling = "max",
        standardize: bool = False,
        dropout: Probability = 0.1,
    ) -> None:
        super().__init__()
        if pooling not in ("max", "mean", "sequence"):
            raise ValueError(f"encoder.pooling must be max, mean or sequence; got {pooling!r}")
        self.input_projection = nn.Linear(in_channels, hidden_dim)
        widths = [hidden_dim] * (depth + 1) + [output_dim]
        self.blocks = nn.ModuleList(
            _ResidualBlock(widths[i], widths[i + 1], kernel_size, 2**i, causal, final=i == depth)
            for i in range(depth + 1))
        self.dropout = nn.Dropout(dropout)
        self.in_channels, self.depth, self.kernel_size, self.causal = in_channels, depth, kernel_size, causal
        self.pooling, self.standardize, self.output_dim = pooling, standardize, output_dim
        self.output_kind = "sequence" if pooling == "sequence" else "vector"

    @property
    def receptive_field(self) -> int:
        """``R = 1 + 2 (k - 1) (2^(depth + 1) - 1)``: the input steps one output step sees."""
        return 1 + 2 * (self.kernel_size - 1) * (2 ** (self.depth + 1) - 1)

    def collate(self) -> Callable[[Sequence[Tensor]], Tensor]:
        return pad_with_nan

    def encode(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-step representations ``(N, L, output_dim)`` of ``x: (N, C, L)``; ``mask: (N, L)``
        bool, True at the steps to hide (their projected input is set to 0)."""
        return self._encode(x, mask)[0]

    def forward(self, x: Tensor) -> Tensor:
        h, lengths = self._encode(x, None)
        if self.pooling == "sequence":
            return h
        lengths = lengths.clamp_min(1).to(h.device)
        valid = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None])[..., None]
        if self.pooling == "max":
            return h.masked_fill(~valid, float("-inf")).amax(dim=1)
        return (h * valid).sum(dim=1) / lengths[:, None].to(h.dtype)

    def _encode(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``h: (N, L, output_dim)`` and the valid lengths ``(N,)`` of ``x: (N, C, L)``."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.in_channels}, L), got {tuple(x.shape)}; "
                             f"set encoder.in_channels to the data's channel count")
        lengths = valid_lengths(x)
        hidden = torch.isnan(x).any(dim=1)  # (N, L)
        x = torch.nan_to_num(x, nan=0.0)
        if self.standardize:
            x = standardize_channels(x, lengths)
        if mask is not None:
            hidden = hidden | mask.to(device=hidden.device, dtype=torch.bool)
        h = self.input_projection(x.transpose(1, 2)).masked_fill(hidden[..., None], 0.0).transpose(1, 2)
        padding = None
        if bool((lengths < x.shape[2]).any()):
            padding = (torch.arange(x.shape[2], device=x.device)[None, :] >= lengths[:, None])[:, None, :]
        for block in self.blocks:
            h = block(h, padding)
        return self.dropout(h).transpose(1, 2), lengths


class _ResidualBlock(nn.Module):
    """``x + conv_2(gelu(conv_1(gelu(x))))`` on ``(N, C_in, L) -> (N, C_out, L)``, the residual
    through a 1x1 conv when ``C_in != C_out`` or in the ``final`` block."""

    def __init__(self, in_width: int, out_width: int, kernel_size: int, dilation: int, causal: bool,
                 final: bool) -> None:
        super().__init__()
        self.conv1 = _PaddedConv(in_width, out_width, kernel_size, dilation, causal)
        self.conv2 = _PaddedConv(out_width, out_width, kernel_size, dilation, causal)
        self.residual = nn.Conv1d(in_width, out_width, 1) if in_width != out_width or final else None

    def forward(self, x: Tensor, padding: Tensor | None) -> Tensor:
        residual = x if self.residual is None else self.residual(x)
        return self.conv2(F.gelu(self.conv1(F.gelu(x), padding)), padding) + residual


class _PaddedConv(nn.Module):
    """A dilated conv that keeps the length: ``(k - 1) d`` zeros added, on the left only when
    ``causal``, else ``ceil`` of half on the left and ``floor`` on the right (TS2Vec's
    ``SamePadConv``). ``padding: (N, 1, L)`` bool marks steps past an item's end, read as 0."""

    def __init__(self, in_width: int, out_width: int, kernel_size: int, dilation: int, causal: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_width, out_width, kernel_size, dilation=dilation)
        total = (kernel_size - 1) * dilation
        self.pad = (total, 0) if causal else (total - total // 2, total // 2)

    def forward(self, x: Tensor, padding: Tensor | None) -> Tensor:
        if padding is not None:
            x = x.masked_fill(padding, 0.0)
        return self.conv(F.pad(x, self.pad))


@declare(Contract(consumes={"ts2vec"}, max_views=1))
class TS2Vec(Objective):
    """TS2Vec's hierarchical contrastive loss over two overlapping crops of every series
    (Yue et al. 2022, sec. 3.2-3.3, and the training loop of the authors' code).

    For the batch ``x: (N, C, L)`` (one view; a longer batch is first cut to a random window of
    ``max_train_length`` steps), with draws shared by every item:

    - ``l ~ U{2^(temporal_unit + 1)..L}``, ``a ~ U{0..L - l}``, ``b = a + l`` (the overlap),
      ``a' ~ U{0..a}``, ``b' ~ U{b..L}``, and per item an offset ``o_i ~ U{-a'..L - b'}``;
    - crop 1 is steps ``[o_i + a', o_i + b)``, crop 2 ``[o_i + a, o_i + b')``; each is encoded
      with a timestamp mask hiding every step with probability ``mask_prob`` (0.5), and the
      representations of the overlap ``[o_i + a, o_i + b)`` are kept:
      ``z1 = encode(crop 1)[:, -l:]``, ``z2 = encode(crop 2)[:, :l]``, both ``(N, l, D)``;
    - ``loss = alpha * instance + (1 - alpha) * temporal`` (``alpha`` 0.5), from
      :func:`hierarchical_instance_loss` and :func:`hierarchical_temporal_loss`: the mean over the
      scales of the max-pooling pyramid, which is :func:`hierarchical_contrastive_loss`.

    Every draw comes from torch's default CPU generator (seeded and checkpointed by the engine,
    so resume is exact), made for the global batch and taken from rank 0 under torchrun; the
    instance term contrasts the global batch (gathered with gradients), the temporal term is a
    mean of per-series terms: ``W`` processes of ``B`` series train as one process of ``W * B``
    (the encoder's dropout masks are the exception: they are drawn per process).

    Needs an encoder with ``encode(x, mask) -> (N, L, D)`` (``ts2vec``); the projector is not
    used (keep ``identity``). Metrics: ``ts2vec_instance`` and ``ts2vec_temporal``.

    >>> objective = TS2Vec(encoder=DilatedConvEncoder(in_channels=1))
    >>> output = objective(batch, encoder, projector)    # batch.views[0]: (8, 1, 150) whole series
    >>> output.loss.backward()
    """

    def __init__(
        self,
        encoder: Encoder,
        alpha: Probability = 0.5,
        temporal_unit: NonNegative = 0,
        mask_prob: Probability = 0.5,
        max_train_length: Positive | None = None,
    ) -> None:
        super().__init__()
        encode = getattr(encoder, "encode", None)
        if not callable(encode) or "mask" not in inspect.signature(encode).parameters:
            raise ValueError(f"encoder: objective ts2vec needs an encoder with encode(x, mask) -> (N, L, D), such as "
                             f"encoder: {{name: ts2vec}}; {type(encoder).__name__} has "
                             f"{'an encode without mask' if callable(encode) else 'no encode'}")
        self.alpha, self.temporal_unit, self.mask_prob = alpha, temporal_unit, mask_prob
        self.max_train_length = max_train_length

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        x = batch.views[0]
        n, length = len(x), x.shape[2]
        usable = length if self.max_train_length is None else min(length, self.max_train_length)
        if usable < 2 ** (self.temporal_unit + 1):
            raise ValueError(f"the training views give {usable} steps, fewer than the 2^(temporal_unit + 1) = "
                             f"{2 ** (self.temporal_unit + 1)} of the shortest crop; lengthen augmentation.window "
                             f"(or objective.max_train_length) or lower objective.temporal_unit")
        total = distributed.world_size() * n
        drawn = draw_crops(total, length, self.temporal_unit, self.mask_prob, self.max_train_length)
        shared = Crops.from_tensor(distributed.broadcast_from_main(drawn.to_tensor()), total, drawn.length)
        crops = shared.rows(slice(distributed.rank() * n, (distributed.rank() + 1) * n))
        first, second = crops.views(x)
        hide_first, hide_second = crops.masks()
        z1 = encoder.encode(first, hide_first)[:, -crops.crop:]
        z2 = encoder.encode(second, hide_second)[:, :crops.crop]
        both = distributed.gather_with_grad(torch.stack([z1, z2]), dim=1)  # (2, W * B, l, D): one collective
        instance = hierarchical_instance_loss(both[0], both[1])
        temporal = hierarchical_temporal_loss(z1, z2, self.temporal_unit)
        loss = self.alpha * instance + (1 - self.alpha) * temporal
        return ObjectiveOutput(loss, {"ts2vec_instance": instance.detach(), "ts2vec_temporal": temporal.detach()})


@dataclass(frozen=True)
class Crops:
    """The two overlapping crops of ``N`` series of ``length`` steps (after the optional window
    ``[start, start + length)``), as :class:`TS2Vec` describes: crop 1 covers ``[o_i + extended_left,
    o_i + left + crop)``, crop 2 ``[o_i + left, o_i + extended_right)``. ``offsets: (N,)`` int64,
    ``hidden: (N, 2, length)`` bool, the timestamp masks of the two crops (their first steps)."""

    start: int
    length: int
    crop: int
    left: int
    extended_left: int
    extended_right: int
    offsets: Tensor
    hidden: Tensor

    def views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Crop 1 ``(N, C, left + crop - extended_left)`` and crop 2 ``(N, C, extended_right - left)`` of
        ``x: (N, C, L)``."""
        x = x[:, :, self.start:self.start + self.length]
        offsets = self.offsets.to(x.device)
        return (_take(x, offsets + self.extended_left, self.left + self.crop - self.extended_left),
                _take(x, offsets + self.left, self.extended_right - self.left))

    def masks(self) -> tuple[Tensor, Tensor]:
        """The timestamp masks of crop 1 and crop 2, ``(N, crop length)`` bool, True = hidden."""
        return (self.hidden[:, 0, : self.left + self.crop - self.extended_left],
                self.hidden[:, 1, : self.extended_right - self.left])

    def rows(self, rows: slice) -> Crops:
        """The crops of the items ``rows`` (a process's share of the global batch)."""
        return Crops(self.start, self.length, self.crop, self.left, self.extended_left, self.extended_right,
                     self.offsets[rows], self.hidden[rows])

    def to_tensor(self) -> Tensor:
        """Everything in one int64 tensor ``(5 + N + 2 N length,)``, to broadcast in one collective."""
        scalars = torch.tensor([self.start, self.crop, self.left, self.extended_left, self.extended_right])
        return torch.cat([scalars, self.offsets, self.hidden.flatten().long()])

    @staticmethod
    def from_tensor(packed: Tensor, n: int, length: int) -> Crops:
        """The inverse of :meth:`to_tensor` for ``n`` items of ``length`` steps."""
        start, crop, left, extended_left, extended_right = packed[:5].tolist()
        return Crops(start, length, crop, left, extended_left, extended_right, packed[5:5 + n],
                     packed[5 + n:].reshape(n, 2, length).bool())


def draw_crops(n: int, length: int, temporal_unit: int = 0, mask_prob: float = 0.5,
               max_train_length: int | None = None) -> Crops:
    """TS2Vec's draws for ``n`` series of ``length`` steps, from torch's default CPU generator.

    The masks are drawn at the full (windowed) length and cut to each crop, which gives the same
    distribution as drawing at each crop's length and keeps the draw's size fixed."""
    start = 0
    if max_train_length is not None and length > max_train_length:
        start = _uniform(0, length - max_train_length)
        length = max_train_length
    crop = _uniform(2 ** (temporal_unit + 1), length)
    left = _uniform(0, length - crop)
    extended_left = _uniform(0, left)
    extended_right = _uniform(left + crop, length)
    offsets = torch.randint(-extended_left, length - extended_right + 1, (n,))
    hidden = torch.rand(n, 2, length) < mask_prob
    return Crops(start, length, crop, left, extended_left, extended_right, offsets, hidden)


def hierarchical_contrastive_loss(z1: Tensor, z2: Tensor, alpha: float = 0.5, temporal_unit: int = 0) -> Tensor:
    """TS2Vec's loss (paper algorithm 1) of the representations ``z1, z2: (B, T, D)`` of the same
    ``T`` steps of ``B`` series in two contexts.

    With ``z^(0) = z`` and ``z^(s+1) = maxpool_2(z^(s))`` along time until ``T_s = 1`` (``S``
    scales; an odd last step is dropped, as in ``max_pool1d``)::

        loss = 1/S [ sum_s alpha l_inst(z1^(s), z2^(s))
                     + sum_{s >= temporal_unit, T_s > 1} (1 - alpha) l_temp(z1^(s), z2^(s)) ]

    (:func:`instance_contrastive_loss`, :func:`temporal_contrastive_loss`).
    """
    return (alpha * hierarchical_instance_loss(z1, z2)
            + (1 - alpha) * hierarchical_temporal_loss(z1, z2, temporal_unit))


def hierarchical_instance_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """``1/S sum_s l_inst(z1^(s), z2^(s))`` over the pyramid of :func:`hierarchical_contrastive_loss`."""
    scales = list(zip(_pyramid(z1), _pyramid(z2)))
    return torch.stack([instance_contrastive_loss(a, b) for a, b in scales]).mean()


def hierarchical_temporal_loss(z1: Tensor, z2: Tensor, temporal_unit: int = 0) -> Tensor:
    """``1/S sum_{s >= temporal_unit, T_s > 1} l_temp(z1^(s), z2^(s))`` (``S`` counts every scale)."""
    scales = list(zip(_pyramid(z1), _pyramid(z2)))
    terms = [temporal_contrastive_loss(a, b) for s, (a, b) in enumerate(scales[:-1]) if s >= temporal_unit]
    return torch.stack(terms).sum() / len(scales) if terms else z1.new_zeros((), dtype=torch.float32)


def instance_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """Instance-wise contrast (paper eq. 2) of ``z1, z2: (B, T, D)``: at every step ``t``, each of
    the ``2B`` representations picks its counterpart in the other view among the other ``2B - 1``
    of that step (dot products, no temperature)::

        l_inst = mean_{t, a} -log( exp(r_a . r_a') / sum_{c != a} exp(r_a . r_c) ),  r = [z1_t; z2_t]

    0 when ``B == 1``."""
    if z1.shape[0] == 1:
        return z1.new_zeros((), dtype=torch.float32)
    return _counterpart_nll(torch.cat([z1, z2], dim=0).transpose(0, 1))


def temporal_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """Temporal contrast (paper eq. 1) of ``z1, z2: (B, T, D)``: in every series, each of the ``2T``
    representations picks the same step's in the other view among the other ``2T - 1`` of that
    series; the mean over series and anchors as :func:`instance_contrastive_loss`. 0 when ``T == 1``."""
    if z1.shape[1] == 1:
        return z1.new_zeros((), dtype=torch.float32)
    return _counterpart_nll(torch.cat([z1, z2], dim=1))


def _counterpart_nll(r: Tensor) -> Tensor:
    """``r: (G, 2M, D)``, ``G`` groups of ``2M`` rows whose row ``a`` and ``a + M`` are a positive
    pair: the mean over groups and rows of ``-log softmax`` of the partner's dot product, the row
    itself left out."""
    r = r.float()
    rows = r.shape[1]
    logits = (r @ r.transpose(1, 2)).masked_fill(torch.eye(rows, dtype=torch.bool, device=r.device), float("-inf"))
    partner = (torch.arange(rows, device=r.device) + rows // 2) % rows
    return F.cross_entropy(logits.reshape(-1, rows), partner.repeat(r.shape[0]))


def _pyramid(z: Tensor) -> list[Tensor]:
    """``[z, maxpool_2(z), ...]`` along time of ``z: (B, T, D)``, down to length 1."""
    scales = [z]
    while scales[-1].shape[1] > 1:
        scales.append(F.max_pool1d(scales[-1].transpose(1, 2), kernel_size=2).transpose(1, 2))
    return scales


def _take(x: Tensor, starts: Tensor, length: int) -> Tensor:
    """``x[i, :, starts[i]:starts[i] + length]`` for every item of ``x: (N, C, L)``: ``(N, C, length)``."""
    index = starts[:, None] + torch.arange(length, device=x.device)[None, :]
    return x.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))


def _uniform(low: int, high: int) -> int:
    """An integer uniform in ``[low, high]``, from torch's default CPU generator."""
    return int(torch.randint(low, high + 1, ()).item())
