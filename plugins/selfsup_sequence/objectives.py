"""The CPC objective: k-step linear predictions of future local features, scored with InfoNCE.

van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding", eq. 3-4;
negative sampling as in CPC_audio (Riviere et al. 2020): negatives are drawn uniformly from the
positions of every sequence in the (global) batch.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit.limits import Positive
from toolkit.compatibility import Contract, declare
from toolkit import distributed
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector

from selfsup_sequence.encoders import valid_lengths

NegativesFrom = Literal["batch", "same_sequence"]


@declare(Contract(consumes={"cpc"}, max_views=1))
class CPC(Objective):
    """Contrastive Predictive Coding over the encoder's local features ``z`` and context ``c``.

    For every step ``k = 1..K`` a linear predictor ``W_k`` scores ``f_k(z, c_t) = z^T W_k c_t``;
    each anchor ``(i, t)`` with ``t + k < T_i`` picks its positive ``z_{i,t+k}`` among ``M``
    negatives (InfoNCE, paper eq. 4), and the loss is the mean over ``k`` of the mean over
    anchors (see :func:`cpc_info_nce`). ``T_i`` counts the frames of item ``i`` that encode its
    samples: frames of the NaN padding of an item shorter than the training window are neither
    targets nor negatives (predicting padding is trivial and teaches nothing). Negatives are other
    valid frames of any sequence of the batch gathered from every process (``negatives_from:
    batch``, CPC_audio's default) or of the anchor's own sequence (``same_sequence``); a target
    never serves as its own negative.
    Indices are drawn for the global batch from torch's CPU generator (seeded and checkpointed
    by the engine), on rank 0 under torchrun, so W processes draw what one process would.

    Needs an encoder with ``encode(x) -> z: (N, T, z_dim)``, ``context(z) -> c: (N, T, c_dim)``
    and ``valid_frames(lengths) -> (N,)`` (``cpc-audio``, ``cpc-series``); the projector is not
    used (keep ``identity``).
    Metrics: ``cpc_acc`` (mean) and ``cpc_acc_k{k}``, the top-1 accuracy of step ``k``.

    >>> objective = CPC(encoder=CPCAudioEncoder(), prediction_steps=12, num_negatives=128)
    >>> output = objective(batch, encoder, projector)   # batch.views[0]: (N, 1, L) windows
    >>> output.loss.backward()
    """

    def __init__(
        self,
        encoder: Encoder,
        prediction_steps: Positive = 12,
        num_negatives: Positive = 128,
        negatives_from: NegativesFrom = "batch",
    ) -> None:
        super().__init__()
        missing = [m for m in ("encode", "context", "valid_frames") if not callable(getattr(encoder, m, None))]
        missing += [a for a in ("z_dim", "c_dim") if not isinstance(getattr(encoder, a, None), int)]
        if missing:
            raise TypeError(f"objective cpc needs an encoder with encode(x) -> z, context(z) -> c, "
                            f"valid_frames(lengths), z_dim and c_dim (cpc-audio, cpc-series); encoder "
                            f"{type(encoder).__name__} lacks {', '.join(missing)}")
        if negatives_from not in ("batch", "same_sequence"):
            raise ValueError(f"objective.negatives_from must be batch or same_sequence, got {negatives_from!r}")
        self.predictors = nn.ModuleList(
            nn.Linear(encoder.c_dim, encoder.z_dim, bias=False) for _ in range(prediction_steps))
        self.num_negatives, self.negatives_from = num_negatives, negatives_from

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        x = batch.views[0]
        z = encoder.encode(x)
        c = encoder.context(z)
        n, steps, dim = z.shape
        if steps <= len(self.predictors):
            raise ValueError(f"the training windows give {steps} frames, but objective.prediction_steps is "
                             f"{len(self.predictors)}; lengthen augmentation.window or lower prediction_steps")
        frames = encoder.valid_frames(valid_lengths(x)).clamp(1, steps).to(z.device)
        pool = distributed.gather_with_grad(z, dim=0).reshape(-1, dim)
        every_frames = distributed.all_gather(frames)
        mine = slice(distributed.rank() * n, (distributed.rank() + 1) * n)
        index = sample_negatives(every_frames.cpu(), steps, self.num_negatives, self.negatives_from)
        index = distributed.broadcast_from_main(index.to(z.device))[mine]  # drawn for the global batch
        loss, accuracies = cpc_info_nce(c, z, pool, self.predictors, index, frames, every_frames)
        metrics: dict[str, Tensor | float] = {"cpc_acc": accuracies.mean()}
        metrics.update({f"cpc_acc_k{k + 1}": a for k, a in enumerate(accuracies)})
        return ObjectiveOutput(loss, metrics)


def cpc_info_nce(
    context: Tensor, z: Tensor, pool: Tensor, predictors: Sequence[nn.Module], negative_index: Tensor,
    frames: Tensor | None = None, every_frames: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The CPC InfoNCE loss over ``K = len(predictors)`` prediction steps.

    ``context: (N, T, H)``, ``z: (N, T, D)``, ``pool: (P, D)`` the negative candidates,
    ``negative_index: (N, T, M)`` int64 into ``pool``: the negatives of target position
    ``(i, j)``; ``frames: (N,)`` the valid frames ``T_i`` of each sequence (all ``T`` when
    ``None``; the frames past an item's end encode padding). For step ``k`` and anchor
    ``(i, t)``, ``t + k < T_i``, with ``p = W_k c_{i,t}``::

        l_{k,i,t} = -log( exp(p . z_{i,t+k}) / (exp(p . z_{i,t+k}) + sum_m exp(p . pool[idx_{i,t+k,m}])) )
        loss = 1/K sum_k mean_{i,t} l_{k,i,t}

    The mean runs over the anchors of the global batch: ``every_frames`` (the ``frames`` of every
    process, under torchrun) gives their count, and each process returns ``W / count`` times its
    own sum, so that DDP's average over ``W`` processes is the global mean.
    Returns the loss and the top-1 accuracies ``(K,)`` (positive scored above every negative).
    """
    n, steps = z.shape[:2]
    frames = torch.full((n,), steps, device=z.device) if frames is None else frames
    every_frames = frames if every_frames is None else every_frames
    scale = len(every_frames) / n  # W: DDP averages the W processes' gradients
    losses, accuracies = [], []
    for k, predictor in enumerate(predictors, start=1):
        prediction = predictor(context[:, : steps - k]).float()
        positive = (prediction * z[:, k:].float()).sum(dim=-1, keepdim=True)
        logits = torch.cat([positive, _negative_scores(prediction, pool, negative_index[:, k:])], dim=-1)
        valid = (torch.arange(steps - k, device=z.device)[None, :] + k < frames[:, None]).reshape(-1)
        count = (every_frames - k).clamp_min(0).sum().clamp_min(1)
        terms = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.zeros_like(valid, dtype=torch.long),
                                reduction="none")
        losses.append((terms * valid).sum() * scale / count)
        with torch.no_grad():
            hits = (logits.reshape(-1, logits.shape[-1]).argmax(dim=1) == 0) & valid
            accuracies.append(hits.sum() / valid.sum().clamp_min(1))
    return torch.stack(losses).mean(), torch.stack(accuracies)


def _negative_scores(prediction: Tensor, pool: Tensor, chosen: Tensor) -> Tensor:
    """``p . pool[j]`` for the chosen ``j``: ``prediction: (N, T, D)``, ``chosen: (N, T, M)`` -> ``(N, T, M)``.

    When the pool has fewer rows than the ``M * D`` values of one anchor's gathered negatives,
    scoring the whole pool with one matrix product and picking is cheaper; otherwise the
    negatives are gathered. Both reduce in a fixed order (``index_select`` rather than advanced
    indexing, whose backward accumulates nondeterministically on several CPU threads).
    """
    if pool.shape[0] <= chosen.shape[-1] * pool.shape[1]:
        scores = prediction.reshape(-1, prediction.shape[-1]) @ pool.float().T
        return scores.reshape(*prediction.shape[:2], -1).gather(-1, chosen)
    negatives = pool.index_select(0, chosen.reshape(-1)).reshape(*chosen.shape, -1).float()
    return torch.einsum("ntd,ntmd->ntm", prediction, negatives)


def sample_negatives(frames: Tensor, steps: int, count: int, source: NegativesFrom) -> Tensor:
    """Indices ``(n, steps, count)`` into the pool ``(n * steps, D)`` of ``n`` sequences' frames,
    of which the first ``frames[i]`` of sequence ``i`` are valid (``frames: (n,)``): the negatives of
    each target position, drawn uniformly among valid frames, never the target itself (``batch``:
    any valid frame of any sequence; ``same_sequence``: another valid frame of its own). Targets
    past their sequence's end get arbitrary valid frames (they are left out of the loss). Drawn from
    torch's default CPU generator (seeded and checkpointed by the engine); under torchrun, for the
    global batch, on rank 0, so every process takes its rows of one draw."""
    n = len(frames)
    position = torch.arange(steps)[None, :]
    valid = position < frames[:, None]
    if source == "batch":
        candidates = (torch.arange(n)[:, None] * steps + position)[valid]  # (P,) the valid frames, in order
        rank = valid.reshape(-1).cumsum(0).reshape(n, steps) - 1  # a valid target's place among them
        drawn = (torch.rand(n, steps, count) * max(len(candidates) - 1, 1)).long()
        drawn = drawn + ((drawn >= rank[..., None]) & valid[..., None]).long()
        return candidates[drawn.clamp_max(len(candidates) - 1)]
    others = (frames[:, None, None] - 1).clamp_min(1)
    drawn = (torch.rand(n, steps, count) * others).long()
    drawn = drawn + ((drawn >= position[..., None]) & valid[..., None]).long()
    return torch.arange(n)[:, None, None] * steps + drawn.clamp_max((frames[:, None, None] - 1).clamp_min(0))
