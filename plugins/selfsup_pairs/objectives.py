"""Image-text contrastive objectives: CLIP's softmax over the batch and SigLIP's pairwise sigmoid.

Both take batches of two views, images ``batch.views[0]`` and captions ``batch.views[1]``,
encode each with the (two-tower) encoder, gather the embeddings of every process with
:func:`toolkit.gather_with_grad` and compute the loss of the global batch on every process,
so training on ``W`` processes of ``B`` pairs equals training on one of ``W * B``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit.compatibility import Contract, declare
from toolkit.distributed import gather_with_grad
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector, pool
from toolkit.limits import PositiveFloat, Temperature

PAIRS = Contract(consumes={"pairs"}, min_views=2, max_views=2)


@declare(PAIRS)
class CLIP(Objective):
    """CLIP's symmetric InfoNCE (Radford et al. 2021, "Learning Transferable Visual Models From
    Natural Language Supervision", fig. 3).

    With ``u_i``, ``v_j`` the L2-normalised image and text embeddings of the ``N`` pairs of the
    global batch and ``s = exp(logit_scale)`` a learned inverse temperature::

        logits_ij = s * u_i . v_j
        loss = 1/2 [ mean_i -log softmax_j(logits_ij)[i]  +  mean_j -log softmax_i(logits_ij)[j] ]

    ``logit_scale`` starts at ``log(1 / temperature)`` (CLIP: ``temperature`` 0.07) and, as in
    CLIP, is clipped after every step so that ``s`` never exceeds ``max_logit_scale`` (100).
    It is the objective's parameter: it trains, is checkpointed, and gets no weight decay.
    Metrics: ``logit_scale`` (``s``), ``temperature`` (``1 / s``), and ``i2t_acc`` / ``t2i_acc``,
    how often an image's own caption (a caption's own image) is the best match in the batch.

    >>> objective = CLIP(temperature=0.07)
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: [(N, C, H, W), tokens]
    """

    def __init__(self, temperature: Temperature = 0.07, max_logit_scale: PositiveFloat = 100.0) -> None:
        super().__init__()
        if 1 / temperature > max_logit_scale:
            raise ValueError(f"objective.temperature ({temperature}) gives a logit scale 1/temperature above "
                             f"objective.max_logit_scale ({max_logit_scale}); raise the temperature")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.max_logit_scale = max_logit_scale

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        image, text = embed_pairs(batch, encoder, projector)
        scale = self.logit_scale.exp()
        loss, i2t, t2i = clip_loss(image, text, scale)
        return ObjectiveOutput(loss, {"logit_scale": scale.detach(), "temperature": 1 / scale.detach(),
                                      "i2t_acc": i2t, "t2i_acc": t2i})

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        self.logit_scale.clamp_(max=math.log(self.max_logit_scale))


@declare(PAIRS)
class SigLIP(Objective):
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image
    Pre-Training", eq. 1 and fig. 1's pseudocode).

    Every image-text pair of the global batch is a binary problem, positive on the diagonal:
    with ``u_i``, ``v_j`` the L2-normalised embeddings of ``N`` pairs, ``z_ij = 1`` if ``i = j``
    else ``-1``, a learned scale ``t = exp(t')`` and bias ``b``::

        loss = -1/N sum_i sum_j log sigmoid( z_ij (t u_i . v_j + b) )

    ``t'`` starts at ``log 10`` and ``b`` at ``-10`` (the paper's initialisation, which makes the
    ``N^2 - N`` negatives start near their target and avoids large early updates). Both are the
    objective's parameters (trained, checkpointed, no weight decay).

    Across processes the paper exchanges text embeddings in chunks between neighbouring devices
    (sec. 3.3): each device only ever holds a ``B x B`` block of logits, and the loss is the sum
    of the blocks. Here every process gathers all ``N`` embeddings and computes the whole
    ``N x N`` loss: the same value and gradients, with ``N^2`` logits per process instead of
    ``B^2`` (at ``N = 4096``, 64 MiB in float32, small next to the towers' activations), in one
    collective instead of ``W - 1``. Metrics: ``logit_scale`` (``t``), ``logit_bias`` (``b``) and
    ``i2t_acc`` / ``t2i_acc`` as in :class:`CLIP`.

    >>> objective = SigLIP()
    >>> loss, metrics = objective(batch, encoder, projector)   # batch.views: [(N, C, H, W), tokens]
    """

    def __init__(self, init_scale: PositiveFloat = 10.0, init_bias: float = -10.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        image, text = embed_pairs(batch, encoder, projector)
        scale = self.logit_scale.exp()
        loss, i2t, t2i = siglip_loss(image, text, scale, self.logit_bias)
        return ObjectiveOutput(loss, {"logit_scale": scale.detach(), "logit_bias": self.logit_bias.detach(),
                                      "i2t_acc": i2t, "t2i_acc": t2i})


def embed_pairs(batch: Batch, encoder: Encoder, projector: Projector) -> tuple[Tensor, Tensor]:
    """The image and text embeddings ``(N, D)`` of the global batch, gathered with gradients.

    ``z = projector(pool(encoder(view)))`` for each of the two views (the projector is the
    identity in the shipped recipes: the two-tower encoder projects each tower itself)."""
    if len(batch.views) != 2:
        raise ValueError(f"image-text objectives take two views per pair (image, caption), got {len(batch.views)}; "
                         f"use augmentation: {{name: pairs}}")
    image, text = (projector(pool(encoder(view))) for view in batch.views)
    both = gather_with_grad(torch.stack([image, text]), dim=1)  # (2, N, D): one collective for both
    return both[0], both[1]


def clip_loss(image: Tensor, text: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CLIP's loss of ``image, text: (N, D)`` (row ``i`` of each is pair ``i``) at logit scale
    ``scale`` (a scalar tensor); returns the loss and the in-batch image->text and text->image
    top-1 accuracies."""
    logits = scale * F.normalize(image.float(), dim=1) @ F.normalize(text.float(), dim=1).T  # (N, N)
    target = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, *_match_accuracy(logits)


def siglip_loss(image: Tensor, text: Tensor, scale: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SigLIP's loss of ``image, text: (N, D)`` with logit scale ``scale`` and bias ``bias``
    (scalar tensors); returns the loss and the in-batch top-1 accuracies as :func:`clip_loss`."""
    logits = scale * F.normalize(image.float(), dim=1) @ F.normalize(text.float(), dim=1).T + bias  # (N, N)
    signs = 2 * torch.eye(len(logits), device=logits.device) - 1
    loss = -F.logsigmoid(signs * logits).sum() / len(logits)
    return loss, *_match_accuracy(logits)


@torch.no_grad()
def _match_accuracy(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Fraction of rows (images) and of columns (captions) of ``logits: (N, N)`` whose maximum is on the diagonal."""
    target = torch.arange(len(logits), device=logits.device)
    return (logits.argmax(dim=1) == target).float().mean(), (logits.argmax(dim=0) == target).float().mean()
