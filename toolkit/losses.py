"""Pure contrastive loss functions of tensors, shared by objectives of every modality.

Objectives add configuration (temperatures, heads) and call these; tests check them against
naive loops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Normalised-temperature cross entropy over ``V`` views (Chen et al. 2020, SimCLR).

    ``z: (V, N, D)``, view ``v`` of item ``i`` at ``z[v, i]``. With ``u`` the L2-normalised
    rows and ``s_ab = u_a . u_b / temperature``, every one of the ``V * N`` anchors ``a`` has
    the other ``V - 1`` views of its item as positives ``P(a)``::

        loss = mean_a  -1/|P(a)| sum_{p in P(a)} log( exp(s_ap) / sum_{b != a} exp(s_ab) )

    For ``V = 2`` this is SimCLR's NT-Xent (one positive, ``2N - 2`` negatives per anchor).
    Returns the scalar loss and the top-1 accuracy of picking a positive among all candidates.
    """
    views, n, dim = z.shape
    item = torch.arange(n, device=z.device).repeat(views)
    return supervised_nt_xent(z.reshape(views * n, dim), item, temperature)


def supervised_nt_xent(z: Tensor, groups: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """NT-Xent where rows with equal ``groups`` are positives (Khosla et al. 2020, SupCon "out").

    ``z: (M, D)``, ``groups: (M,)``. Anchors without any positive are left out of the mean.
    Returns the scalar loss and the top-1 accuracy of picking a positive among all candidates.
    """
    u = F.normalize(z.float(), dim=1)
    logits = u @ u.T / temperature
    self_mask = torch.eye(len(u), dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (groups[:, None] == groups[None, :]) & ~self_mask
    log_prob = logits.log_softmax(dim=1).masked_fill(self_mask, 0.0)
    counts = positives.sum(dim=1)
    has_positive = counts > 0
    per_anchor = -(log_prob * positives).sum(dim=1)[has_positive] / counts[has_positive]
    with torch.no_grad():
        best = logits.argmax(dim=1)
        accuracy = positives[torch.arange(len(u), device=u.device), best][has_positive].float().mean()
    return per_anchor.mean(), accuracy


def info_nce(
    query: Tensor,
    positive: Tensor,
    temperature: float,
    negatives: Tensor | None = None,
    in_batch: bool = True,
    hard_negatives: Tensor | None = None,
    hard_negative_weight: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """InfoNCE (van den Oord et al. 2018) with cosine similarities, for every query row.

    ``query: (N, D)``; ``positive: (N, D)``, row ``i``'s positive is ``positive[i]``. With
    ``s(a, b) = cos(a, b) / temperature`` the candidates of row ``i`` are its positive, and

    - ``in_batch``: the other rows of ``positive`` (SimCSE, CLIP);
    - ``negatives: (K, D)``: negatives shared by every row (MoCo's queue);
    - ``hard_negatives: (N, D)``: every row's hard negative (supervised SimCSE); row ``i``'s own
      hard negative gets ``hard_negative_weight`` added to its logit, as in the SimCSE code.

    ``loss = mean_i -log( exp(s(q_i, p_i)) / sum_{c in candidates(i)} exp(s(q_i, c) + bias_ic) )``.
    Returns the scalar loss and the top-1 accuracy of picking the positive.
    """
    q = F.normalize(query.float(), dim=1)
    p = F.normalize(positive.float(), dim=1)
    n = q.shape[0]
    if in_batch:
        columns = [q @ p.T]
    else:
        columns = [(q * p).sum(dim=1, keepdim=True)]
    if negatives is not None:
        columns.append(q @ F.normalize(negatives.float(), dim=1).T)
    if hard_negatives is not None:
        hard = q @ F.normalize(hard_negatives.float(), dim=1).T
        columns.append(hard + hard_negative_weight * temperature * torch.eye(n, device=q.device))
    logits = torch.cat(columns, dim=1) / temperature
    target = torch.arange(n, device=q.device) if in_batch else torch.zeros(n, dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits, target)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == target).float().mean()
    return loss, accuracy


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam's ``D`` (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

    ``prediction, target: (N, D)``; ``loss = mean_i -cos(p_i, z_i)``, in ``[-1, 1]``. The caller
    stops the gradient into ``target`` (SimSiam's stop-gradient).
    """
    return -F.cosine_similarity(prediction.float(), target.float(), dim=1).mean()


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL's regression loss (Grill et al. 2020, "Bootstrap Your Own Latent", eq. 2).

    ``prediction, target: (N, D)``; with ``p^ = p / ||p||`` and ``z^ = z / ||z||``,
    ``loss = mean_i ||p^_i - z^_i||^2 = mean_i (2 - 2 cos(p_i, z_i))``, in ``[0, 4]``.
    """
    return (2 - 2 * F.cosine_similarity(prediction.float(), target.float(), dim=1)).mean()
