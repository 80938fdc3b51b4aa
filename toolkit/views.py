"""Encoding a batch's views, for any objective that compares views of one item.

- :func:`embed_views` / :func:`forward_runs`: one forward pass per run of same-shape views
  (two global views share their batch-norm statistics; multi-crop's smaller views go together).
- :func:`concat_views`: views of token dicts (text) of different lengths as one padded batch.
- :func:`prediction_pairs`: which view predicts which (BYOL, SimSiam, with multi-crop).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.interfaces import Encoder, Projector, pool


def embed_views(views: Sequence[Any], encoder: Encoder, projector: Projector) -> list[Tensor]:
    """``z_v = projector(pool(encoder(x_v)))`` for every view ``x_v`` (``(N, ...)`` tensors, or
    dicts of token tensors); returns ``V`` tensors ``(N, D)``.

    Consecutive tensor views of one shape are concatenated into one forward pass, so two global
    views share their batch-norm statistics (as in SimCLR) and multi-crop's local views, smaller,
    go through a second pass (as in SwAV's multi-crop wrapper). Token views go through one pass,
    padded to a common length with the encoder's ``pad_token_id`` (:func:`concat_views`).
    """
    if isinstance(views[0], dict):
        batch = concat_views(views, getattr(encoder, "pad_token_id", 0))
        return list(projector(pool(encoder(batch))).chunk(len(views)))
    return forward_runs(views, lambda x: projector(pool(encoder(x))))


def forward_runs(views: Sequence[Tensor], net: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """``net`` over every view, one call per run of consecutive same-shape views."""
    outputs: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        outputs.extend(net(torch.cat(list(views[start:end]))).chunk(end - start))
        start = end
    return outputs


def prediction_pairs(n_views: int, n_targets: int = 2) -> list[tuple[int, int]]:
    """``(i, j)``: view ``i``'s prediction regresses target view ``j``, for every view ``i`` and
    every one of the first ``n_targets`` (global) views ``j != i``.

    Two views give BYOL's and SimSiam's symmetric pairs ``[(0, 1), (1, 0)]``; with multi-crop the
    local views predict both global views (Caron et al. 2020, SwAV's multi-crop applied to BYOL).
    """
    if n_views < 2:
        raise ValueError(f"this objective needs at least 2 views per item, got {n_views}; "
                         f"set augmentation.n_views to 2 or more")
    return [(i, j) for i in range(n_views) for j in range(min(n_targets, n_views)) if i != j]


def concat_views(views: Sequence[Any], pad_token_id: int = 0) -> Any:
    """``V`` views of ``N`` items as one batch of ``V * N`` rows, view-major.

    Tensors ``(N, ...)`` are concatenated; dicts of token tensors ``(N, T_v)`` are right-padded
    to the longest ``T_v`` (``input_ids`` with ``pad_token_id``, everything else, the attention
    mask included, with 0) and concatenated key by key.
    """
    if isinstance(views[0], Tensor):
        return torch.cat(list(views))
    length = max(view["input_ids"].shape[1] for view in views)
    return {key: torch.cat([F.pad(view[key], (0, length - view[key].shape[1]),
                                  value=pad_token_id if key == "input_ids" else 0) for view in views])
            for key in views[0]}
