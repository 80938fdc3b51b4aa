"""Same-video retrieval: is a frame's nearest neighbour among frames of other times from its own video?"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.interfaces import EvalContext, Evaluator


class VideoRetrieval(Evaluator):
    """Top-1 and mAP of same-video retrieval over the frames (or clips) of one evaluation split.

    Every item ``q`` of the ``role`` split is a query; its candidates are all other items except
    those of its own video within ``exclude_window`` frames of it, so near-duplicate neighbours
    cannot answer (frames of other videos are always candidates). Candidates are ranked by
    cosine similarity of the frozen features; relevant = same video. See
    :func:`same_video_retrieval` for the formulas. Needs a data source with ``unit: frame`` or
    ``unit: clip`` (``video_ids`` and ``frame_times``); ``exclude_window`` counts frames at the
    source's frame rate. Reports ``retrieval_top1`` and ``retrieval_map``.
    """

    def __init__(self, exclude_window: int = 5, role: Literal["train", "test"] = "test") -> None:
        if exclude_window < 0:
            raise ValueError(f"exclude_window must be >= 0, got {exclude_window}")
        self.exclude_window, self.role = exclude_window, role

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        source = context.source(self.role)
        video_ids, times = getattr(source, "video_ids", None), getattr(source, "frame_times", None)
        if video_ids is None or times is None:
            raise ValueError(f"video-retrieval needs frames or clips with their video and time; set "
                             f"eval.{self.role}_data.unit: frame (or clip) on a video data source "
                             f"(video-files, frame-folders, frame-arrays)")
        features, _ = context.features(self.role)
        top1, average_precision, _ = same_video_retrieval(features, video_ids, times, self.exclude_window)
        return {"retrieval_top1": top1, "retrieval_map": average_precision}


def same_video_retrieval(features: Tensor, video_ids: Tensor, times: Tensor, exclude_window: int,
                         chunk: int = 1024) -> tuple[float, float, int]:
    """Same-video retrieval over ``features: (M, D)`` with ``video_ids, times: (M,)`` int64.

    For query ``q`` the candidates are
    ``C(q) = {c != q : video(c) != video(q) or |time(c) - time(q)| > exclude_window}``, ranked by
    decreasing ``cos(f_q, f_c)`` (ties keep index order); ``rel(c) = [video(c) = video(q)]``,
    ``R(q) = sum_{c in C(q)} rel(c)``. With ``c_k`` the ``k``-th ranked candidate::

        top1 = mean_q rel(c_1)
        AP(q) = 1/R(q) sum_k rel(c_k) * (sum_{j <= k} rel(c_j)) / k
        mAP   = mean_q AP(q)

    Queries with ``R(q) = 0`` (no frame of their video outside the window) are left out of both
    means. Returns ``(top1, mAP, number of queries counted)``.
    """
    u = F.normalize(features.float(), dim=1)
    top1, precision, counted = 0.0, 0.0, 0
    for start in range(0, len(u), chunk):
        rows = torch.arange(start, min(start + chunk, len(u)))
        same = video_ids[rows, None] == video_ids[None, :]
        near = (times[rows, None] - times[None, :]).abs() <= exclude_window
        excluded = same & near
        excluded[torch.arange(len(rows)), rows] = True  # the query itself
        similarity = (u[rows] @ u.T).masked_fill(excluded, float("-inf"))
        order = similarity.argsort(dim=1, descending=True, stable=True)
        relevant = (same & ~excluded).gather(1, order).float()
        ranks = torch.arange(1, u.shape[0] + 1, dtype=torch.float32)  # excluded items rank last, irrelevant
        total = relevant.sum(dim=1)
        keep = total > 0
        hits = relevant[:, 0]
        ap = (relevant * relevant.cumsum(dim=1) / ranks).sum(dim=1) / total.clamp_min(1)
        top1 += float(hits[keep].sum())
        precision += float(ap[keep].sum())
        counted += int(keep.sum())
    if counted == 0:
        raise ValueError("video-retrieval: no query has a frame of its own video outside exclude_window; lower "
                         "exclude_window or evaluate on longer videos")
    return top1 / counted, precision / counted, counted
