"""DINO: a student matches the centred, sharpened output of a momentum teacher over prototypes.

- :class:`DINOHead`: the ``dino-head`` projector (MLP, l2-normalised bottleneck, weight-normalised
  last layer to ``output_dim`` prototypes), its last layer frozen for its first steps.
- :class:`DINO`: the ``dino`` objective (momentum teacher, centring, teacher-temperature warmup,
  weight-decay schedule), with the pure functions :func:`dino_loss` and
  :func:`teacher_temperature`.
- :func:`dino_before_optimizer_step`: the frozen last layer and the weight-decay schedule, called
  by the image plugin's ``on_before_optimizer_step`` hook on every process.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit import distributed
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector, RunContext
from toolkit.limits import Momentum, NonNegative, NonNegativeFloat, Positive, Temperature
from toolkit.momentum import MomentumSchedule, MomentumTarget
from toolkit.views import embed_views, forward_runs


class DINOHead(Projector):
    """DINO's projection head (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
    Transformers", section 3.1 and appendix): ``h: (N, input_dim) -> logits (N, output_dim)``.

    ``layers`` linear layers ``input_dim -> hidden_dim -> ... -> bottleneck_dim`` with GELU
    between them (``Linear -> [BatchNorm1d] -> GELU`` with ``batch_norm``), the bottleneck
    l2-normalised, then a weight-normalised linear layer without bias to ``output_dim``
    prototypes (:class:`WeightNormLinear`; 65536 in the paper). ``norm_last_layer`` fixes the
    prototypes' norms at 1 (the paper's default, which stabilises training; ``false`` learns them).

    ``freeze_last_layer`` is the number of optimizer steps (not epochs) during which the last
    layer is not updated: the paper freezes it for the first epoch, i.e. ``freeze_last_layer``
    = steps per epoch = ``len(data) // trainer.batch_size``. The image plugin's
    ``on_before_optimizer_step`` hook drops its gradients (:func:`dino_before_optimizer_step`).

    >>> head = DINOHead(input_dim=512, output_dim=4096, freeze_last_layer=195)
    >>> logits = head(torch.randn(8, 512))   # (8, 4096)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: Positive = 2048,
        bottleneck_dim: Positive = 256,
        output_dim: Positive = 65536,
        layers: Positive = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer: NonNegative = 0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = input_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden_dim)]
            blocks += [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
            blocks += [nn.GELU()]
            width = hidden_dim
        blocks.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*blocks)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):  # the official initialisation, as for ViTs
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, output_dim, learn_norm=not norm_last_layer)
        self.output_dim, self.freeze_last_layer = output_dim, freeze_last_layer

    def forward(self, h: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(h), dim=-1))


class WeightNormLinear(nn.Module):
    """``x: (N, in_dim) -> x W^T: (N, out_dim)`` with rows ``W_k = g_k v_k / ||v_k||`` (Salimans &
    Kingma 2016, weight normalisation), no bias.

    ``weight_v: (out_dim, in_dim)`` holds the directions, ``weight_g: (out_dim, 1)`` the norms,
    starting at 1 and fixed there unless ``learn_norm``. (A plain module rather than
    ``torch.nn.utils.parametrizations.weight_norm``, whose modules cannot be pickled, which
    spawning processes needs.)
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's initialisation
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


@declare(Contract(consumes={"tensor"}, min_views=2))
class DINO(Objective):
    """DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

    The student is the encoder and projector (a :class:`DINOHead`, ``dino-head``); the teacher
    an EMA copy of both (:class:`toolkit.MomentumTarget`, momentum from ``momentum_teacher``,
    0.996, to 1 by cosine). The student sees every view ``s_v: (N, K)``, global and local
    (multi-crop: the ``simclr`` augmentation's ``local_crops``), the teacher the two global
    views ``t_i: (N, K)`` only (the first two views). With the centre ``C: (1, K)``::

        P_t(t_i) = softmax((t_i - C) / tau_t),   L = mean over pairs (i, v), v != i, of
                   mean over items of -sum_k P_t(t_i)_k log softmax(s_v / tau_s)_k

    (the paper's eq. 3; :func:`dino_loss`). ``tau_s = student_temp`` (0.1); ``tau_t`` warms up
    linearly from ``warmup_teacher_temp`` (0.04) to ``teacher_temp`` over the first
    ``warmup_teacher_temp_steps`` optimizer steps and stays there (:func:`teacher_temperature`;
    the paper's ViTs: 0.04 -> 0.07 over 30 epochs; steps, not epochs, so multiply by
    ``len(data) // trainer.batch_size``; a run shorter than the warmup never reaches
    ``teacher_temp``). After each forward the centre follows the teacher's mean output over the
    global batch of every process, ``C <- m C + (1 - m) mean(t)``, ``m = center_momentum``
    (0.9): the mean is gathered with :func:`toolkit.all_gather`, so every process holds the same
    centre and 2 processes train as 1.

    Weight decay: with ``weight_decay_end`` set, parameter groups whose weight decay is above 0
    at the first step follow a cosine from that value (``optimizer.weight_decay``, 0.04 in the
    paper) to ``weight_decay_end`` (0.4), applied before each optimizer step by the image
    plugin's hook (:func:`dino_before_optimizer_step`); ``null`` keeps it constant (the paper's
    ResNet setting).

    The step count, the centre and the teacher (with its momentum) are buffers: a checkpoint
    holds them and resume is exact. Metrics: ``teacher_entropy`` (mean entropy of ``P_t``),
    ``kl`` (``L`` minus it: the mean KL divergence between teacher and student), ``teacher_temp``
    and ``momentum``.

    >>> objective = DINO(encoder, projector, teacher_temp=0.07, warmup_teacher_temp_steps=5850)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        encoder: Encoder,
        projector: Projector,
        teacher_temp: Temperature = 0.04,
        warmup_teacher_temp: Temperature = 0.04,
        warmup_teacher_temp_steps: NonNegative = 0,
        student_temp: Temperature = 0.1,
        center_momentum: Momentum = 0.9,
        momentum_teacher: Momentum = 0.996,
        momentum_schedule: MomentumSchedule = "cosine",
        weight_decay_end: NonNegativeFloat | None = 0.4,
    ) -> None:
        super().__init__()
        self.teacher = MomentumTarget(encoder, projector, momentum_teacher, momentum_schedule)
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_steps, self.student_temp = warmup_teacher_temp_steps, student_temp
        self.center_momentum, self.weight_decay_end = center_momentum, weight_decay_end
        self.register_buffer("center", torch.zeros(1, projector.output_dim))
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        if len(batch.views) < 2:
            raise ValueError("dino needs 2 global views per item (and optionally local crops); "
                             "set augmentation.n_views: 2")
        student = [s.float() for s in embed_views(batch.views, encoder, projector)]
        teacher = [t.float() for t in forward_runs(batch.views[:2], self.teacher)]
        temperature = teacher_temperature(int(self.steps_taken), self.warmup_teacher_temp, self.teacher_temp,
                                          self.warmup_teacher_temp_steps)
        loss = dino_loss(student, teacher, self.center, temperature, self.student_temp)
        log_p = F.log_softmax((torch.cat(teacher) - self.center) / temperature, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
        self._update_center(torch.cat(teacher))
        return ObjectiveOutput(loss, {"teacher_entropy": entropy, "kl": loss.detach() - entropy,
                                      "teacher_temp": temperature, "momentum": float(self.teacher.momentum)})

    @torch.no_grad()
    def _update_center(self, teacher: Tensor) -> None:
        """``C <- m C + (1 - m) mean(teacher)`` over the global batch, ``teacher: (2N, K)`` on
        this process; every process has ``2N`` rows, so the mean of the processes' means is the
        global mean."""
        mean = distributed.all_gather(teacher.mean(dim=0, keepdim=True)).mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, encoder: Encoder, projector: Projector) -> None:
        self.teacher.update(encoder, projector, step, total_steps)
        self.steps_taken.fill_(step)


def dino_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], center: Tensor, teacher_temp: float,
              student_temp: float) -> Tensor:
    """DINO's cross-entropy (Caron et al. 2021, eq. 3), averaged over every pair ``(i, v)`` of a
    teacher view ``i`` and a student view ``v != i``.

    ``student``: ``V`` tensors ``(N, K)``, the student's logits for every view (the globals
    first); ``teacher``: the teacher's logits ``(N, K)`` for the first views (the two global
    ones); ``center: (1, K)``. Returns the scalar
    ``mean_(i, v) mean_n -sum_k softmax((t_i - C) / teacher_temp)_nk log softmax(s_v / student_temp)_nk``.
    The teacher's side carries no gradient.
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher]
    log_predictions = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    terms = [-(target * log_predictions[v]).sum(dim=-1).mean()
             for i, target in enumerate(targets) for v in range(len(student)) if v != i]
    return torch.stack(terms).mean()


def teacher_temperature(step: int, warmup_temp: float, temp: float, warmup_steps: int) -> float:
    """The teacher's temperature after ``step`` optimizer steps (0 at the first): linear from
    ``warmup_temp`` at step 0 to ``temp`` at ``warmup_steps``, ``temp`` from then on."""
    if step >= warmup_steps:
        return temp
    return warmup_temp + (temp - warmup_temp) * step / warmup_steps


def cosine_weight_decay(step: int, total_steps: int, start: float, end: float) -> float:
    """DINO's schedule at optimizer step ``step`` (1-based) of ``total_steps``:
    ``end + (start - end) * (1 + cos(pi * (step - 1) / total_steps)) / 2``, ``start`` at step 1."""
    progress = min(step - 1, total_steps) / max(total_steps, 1)
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def dino_before_optimizer_step(run: RunContext, step: int) -> None:
    """Before optimizer step ``step`` (1-based), on every process: drop the gradients of a
    :class:`DINOHead`'s last layer during its first ``freeze_last_layer`` steps (the optimizer
    then skips it: no update, no decay, no momentum), and, in a :class:`DINO` run with
    ``weight_decay_end``, set the weight decay of every group that had some at the first step
    by :func:`cosine_weight_decay`. The group's starting value is kept in the group as
    ``initial_weight_decay`` (as schedulers keep ``initial_lr``), so it is in the optimizer's
    checkpoint and a resumed run continues the same cosine."""
    if isinstance(run.projector, DINOHead) and step <= run.projector.freeze_last_layer:
        for parameter in run.projector.last_layer.parameters():
            parameter.grad = None
    if isinstance(run.objective, DINO) and run.objective.weight_decay_end is not None:
        for group in run.optimizer.param_groups:
            start = group.setdefault("initial_weight_decay", group.get("weight_decay", 0.0))
            if start > 0:
                group["weight_decay"] = cosine_weight_decay(step, run.total_steps, start,
                                                            run.objective.weight_decay_end)
