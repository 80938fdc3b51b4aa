"""SwAV: swapped prediction of online cluster assignments (Sinkhorn-Knopp codes) between views.

- :class:`SwAV`: the ``swav`` objective (prototypes, codes of the global batch, optional queue).
- :func:`sinkhorn_knopp` and :func:`swapped_prediction_loss`: the math, as pure functions.
- :func:`swav_before_optimizer_step`: the prototypes frozen for their first steps, called by the
  image plugin's ``on_before_optimizer_step`` hook on every process.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit import distributed
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector, RunContext
from toolkit.limits import NonNegative, Positive, Temperature
from toolkit.memory import KeyQueue
from toolkit.views import embed_views

ASSIGNED_VIEWS = 2
"""Codes are computed for the two global views (SwAV's ``crops_for_assign``); every view predicts them."""


@declare(Contract(consumes={"tensor"}, min_views=2))
class SwAV(Objective):
    """SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments").

    Embeddings ``z_v = normalise(projector(encoder(x_v))): (N, D)`` for every view, global and
    local (multi-crop: the ``simclr`` augmentation's ``local_crops``); prototypes ``c: (K, D)``,
    a linear layer without bias whose rows are l2-normalised after every optimizer step
    (``K = num_prototypes``, 3000). Scores ``s_v = z_v c^T: (N, K)``. For each of the two global
    views ``i`` the codes ``q_i: (N, K)`` are the Sinkhorn-Knopp assignment of ``s_i``
    (:func:`sinkhorn_knopp`, ``sinkhorn_iterations`` 3, ``epsilon`` 0.05) without gradient, and
    every other view predicts them (section 3.1, :func:`swapped_prediction_loss`)::

        L = mean_i mean_(v != i) mean_n -sum_k q_i,nk log softmax(s_v,n / temperature)_k

    The codes are computed over the global batch: each process gathers the (detached) embeddings
    of every process (:func:`toolkit.all_gather`) and solves the same transport problem, then
    keeps its own rows, so 2 processes train exactly as 1. (The official code instead all-reduces
    the row and column sums of ``Q`` over processes at each iteration; the problem solved is the
    same, and gathering ``D``-dimensional embeddings lets every process hold one global queue.)

    Small batches: with ``queue_length > 0`` the embeddings of the global views of past batches
    (one :class:`toolkit.KeyQueue` per global view, ``queue_length`` rows of the global batch:
    3840 in the paper for batches of 256) join the transport problem as extra columns, scored
    with the current prototypes. The queues are filled from optimizer step
    ``queue_start_step + 1`` on and used once full (the paper starts at epoch 15 of ImageNet:
    steps, not epochs, here; steps per epoch = ``len(data) // trainer.batch_size``).

    ``freeze_prototypes_steps`` (313 in the official code: one ImageNet epoch at batch 4096): the
    prototypes are not updated during the first optimizer steps. The image plugin's
    ``on_before_optimizer_step`` hook drops their gradients (:func:`swav_before_optimizer_step`).

    Queues, their fill count and the step count are buffers: a checkpoint holds them and resume is
    exact. Metric: ``queue_in_use`` (1 once the queue takes part in the codes).

    >>> objective = SwAV(projector, num_prototypes=3000, queue_length=3840, queue_start_step=9750)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        projector: Projector,
        temperature: Temperature = 0.1,
        num_prototypes: Positive = 3000,
        sinkhorn_iterations: Positive = 3,
        epsilon: Temperature = 0.05,
        queue_length: NonNegative = 0,
        queue_start_step: NonNegative = 0,
        freeze_prototypes_steps: NonNegative = 313,
    ) -> None:
        super().__init__()
        self.temperature, self.sinkhorn_iterations, self.epsilon = temperature, sinkhorn_iterations, epsilon
        self.queue_length, self.queue_start_step = queue_length, queue_start_step
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.prototypes = nn.Linear(projector.output_dim, num_prototypes, bias=False)
        self.normalize_prototypes()
        self.queues = nn.ModuleList([KeyQueue(queue_length, projector.output_dim)
                                     for _ in range(ASSIGNED_VIEWS if queue_length else 0)])
        self.register_buffer("queued", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        if len(batch.views) < ASSIGNED_VIEWS:
            raise ValueError("swav needs 2 global views per item (and optionally local crops); "
                             "set augmentation.n_views: 2")
        z = [F.normalize(e.float(), dim=1) for e in embed_views(batch.views, encoder, projector)]
        scores = [self.prototypes(z_v) for z_v in z]
        use_queue = bool(self.queues) and int(self.queued) >= self.queue_length
        globals_ = [distributed.all_gather(z_i.detach()) for z_i in z[:ASSIGNED_VIEWS]]
        codes = [self._codes(embeddings, i, use_queue, len(batch)) for i, embeddings in enumerate(globals_)]
        loss = swapped_prediction_loss(scores, codes, self.temperature)
        if self.queues and int(self.steps_taken) >= self.queue_start_step:
            for queue, embeddings in zip(self.queues, globals_):
                queue.enqueue(embeddings)
            self.queued.add_(len(globals_[0])).clamp_(max=self.queue_length)
        return ObjectiveOutput(loss, {"queue_in_use": float(use_queue)})

    @torch.no_grad()
    def _codes(self, embeddings: Tensor, view: int, use_queue: bool, rows: int) -> Tensor:
        """This process's codes ``(rows, K)`` for global view ``view``, from the global batch's
        embeddings ``(W * rows, D)`` (and the queue's, when in use)."""
        if use_queue:
            embeddings = torch.cat([self.queues[view].keys, embeddings])
        with torch.autocast(embeddings.device.type, enabled=False):  # exp(s / 0.05) needs float32
            codes = sinkhorn_knopp(embeddings @ self.prototypes.weight.detach().float().t(), self.epsilon,
                                   self.sinkhorn_iterations)
        start = len(embeddings) - rows * distributed.world_size() + rows * distributed.rank()
        return codes[start:start + rows]

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """``c_k <- c_k / ||c_k||`` for every prototype."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        self.normalize_prototypes()
        self.steps_taken.fill_(step)


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's codes (Caron et al. 2020, section 3.1; Cuturi 2013).

    ``scores: (B, K)``, the similarities of ``B`` embeddings to ``K`` prototypes. The transport
    plan ``Q = exp(scores / epsilon)^T: (K, B)``, scaled to sum to 1, is alternately rescaled
    so that every prototype gets ``1/K`` of the mass (rows) and every embedding ``1/B``
    (columns), ``iterations`` times; the embedding marginals are exact, the prototype ones
    approach ``1/K``. Returns ``B * Q^T: (B, K)``: each embedding's soft assignment, its row
    summing to 1. (The maximum score is subtracted first: it cancels in the scaling and keeps
    ``exp`` finite.)
    """
    q = torch.exp((scores - scores.max()) / epsilon).t()
    q /= q.sum()
    prototypes, embeddings = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * prototypes
        q /= q.sum(dim=0, keepdim=True) * embeddings
    return (q * embeddings).t()


def swapped_prediction_loss(scores: Sequence[Tensor], codes: Sequence[Tensor], temperature: float) -> Tensor:
    """SwAV's swapped prediction (Caron et al. 2020, section 3.1) with multi-crop (section 3.2).

    ``scores``: ``V`` tensors ``(N, K)``, every view's similarities to the prototypes (the global
    views first); ``codes``: the codes ``(N, K)`` of the first ``len(codes)`` views. Returns
    ``mean_i mean_(v != i) mean_n -sum_k codes_i,nk log softmax(scores_v,n / temperature)_k``.
    """
    log_predictions = [F.log_softmax(s / temperature, dim=1) for s in scores]
    per_code = [torch.stack([-(q * log_predictions[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i]).mean()
                for i, q in enumerate(codes)]
    return torch.stack(per_code).mean()


def swav_before_optimizer_step(run: RunContext, step: int) -> None:
    """Before optimizer step ``step`` (1-based), on every process: during a :class:`SwAV` run's
    first ``freeze_prototypes_steps`` steps, drop the prototypes' gradient, so the optimizer
    skips them (no update, no decay, no momentum), as the official code does.

    Here rather than in the objective: detaching the prototypes in ``forward`` would leave a
    parameter without gradient, which DDP refuses unless ``trainer.find_unused_parameters``;
    ``after_step`` comes after the optimizer has moved them. The hook runs after the gradients
    are averaged over processes, and ``step`` is the engine's, restored on resume."""
    if isinstance(run.objective, SwAV) and step <= run.objective.freeze_prototypes_steps:
        run.objective.prototypes.weight.grad = None
