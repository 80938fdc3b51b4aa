"""The engine's own recipe sections: ``trainer``, ``schedule`` and ``eval``.

Each is a dataclass whose fields are the section's schema, validated like a component factory;
limits are in the annotations, and checks across fields in ``__post_init__`` (raising
:class:`~toolkit.schema.SchemaError` with the key to blame), so ``selfsup recipe validate`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval

from toolkit.limits import NonNegative, Positive
from toolkit.schema import SchemaError


@dataclass
class TrainerConfig:
    """``trainer:`` how to run the loop.

    ``batch_size`` is the number of items per optimizer step (each seen through every view);
    with ``accumulate_grad_batches = k`` each step accumulates ``k`` micro-batches of
    ``batch_size // k``. ``precision: auto`` means bf16 autocast on CUDA and fp32 elsewhere.
    ``checkpoint_every`` counts optimizer steps; a checkpoint is also written at the end.
    ``flush_denormal`` treats denormal CPU floats as zero and ``tune_malloc`` fixes glibc's
    allocation thresholds; both make CPU steps faster and their speed repeatable (see
    :mod:`toolkit.cpu` for the measurements). They change no result beyond float underflow.
    Under ``torchrun``, ``batch_size`` stays global (each process takes an equal share);
    ``sync_batchnorm`` computes batch-norm statistics over the global batch (PyTorch's
    SyncBatchNorm on CUDA, :class:`toolkit.sync_batchnorm.GlobalBatchNorm` elsewhere), and
    ``find_unused_parameters`` is passed to DistributedDataParallel. ``channels_last`` stores
    the model and every 4-D input in the NHWC layout that convolutions on tensor cores prefer;
    ``compile`` compiles the encoder's forward with :func:`torch.compile` (its state dict, hence
    checkpoints and exports, is unchanged). Both are for CUDA; ``benchmarks/README.md`` has
    their measured effect. ``report`` writes ``RUN_DIR/report/`` (:mod:`toolkit.reporting`) when
    ``selfsup train`` or ``toolkit.train`` finishes (``selfsup train --no-report`` also turns it off).
    """

    batch_size: Positive = 256
    accumulate_grad_batches: Positive = 1
    clip_grad_norm: Annotated[float, Gt(0)] | None = None
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    seed: Annotated[int, Interval(ge=0, lt=2**63)] = 0
    num_workers: NonNegative = 0
    log_every: Positive = 10
    checkpoint_every: Positive = 500
    output_dir: Path | None = None
    flush_denormal: bool = True
    tune_malloc: bool = True
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    channels_last: bool = False
    compile: bool = False
    report: bool = True

    def __post_init__(self) -> None:
        if self.batch_size % self.accumulate_grad_batches:
            raise SchemaError("accumulate_grad_batches", f"must divide batch_size ({self.batch_size}) into equal "
                              f"micro-batches, got {self.accumulate_grad_batches}")


@dataclass
class ScheduleConfig:
    """``schedule:`` length of training and the learning rate over it.

    Linear warmup from 0 to the optimizer's ``lr`` over ``warmup_epochs`` (or ``warmup_steps``),
    then a cosine decay to ``min_lr_ratio * lr`` at the last step. ``max_steps`` caps the
    number of optimizer steps (handy for smoke tests) without changing the epoch length.
    """

    epochs: Positive = 100
    max_steps: Positive | None = None
    warmup_epochs: Annotated[float, Ge(0)] = 0.0
    warmup_steps: NonNegative | None = None
    min_lr_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.0


@dataclass
class BestSelection:
    """``eval.select_best:`` which evaluation metric picks the encoder a run keeps."""

    metric: str
    mode: Literal["max", "min"] = "max"


@dataclass
class EvalConfig:
    """``eval:`` frozen-feature evaluation, periodic and at the end of training.

    ``evaluators`` are component blocks (``{name: knn, k: 200}``). Features come from the
    data source rebuilt with ``train_data`` / ``test_data`` merged over ``data`` (their
    ``split`` defaults to ``train`` / ``test``) and the
    augmentation's evaluation transform. Data without a test split of its own (a flat folder,
    one file) holds out a seeded ``holdout_fraction`` of its items as ``test`` (the training
    split is the rest; the log says so); with ``holdout_fraction: 0``, or a recipe with no
    evaluators (nothing to hold out for), it trains on every item and evaluators that need a test
    split are skipped. ``every_epochs`` / ``every_steps`` (0: off) add periodic evaluations to the
    one at the end;
    ``at_start: true`` also evaluates the encoder before training (random or pretrained init).
    ``select_best: {metric: sts_dev_spearman, mode: max}`` keeps the encoder of the best
    evaluation so far (before training included) as the run's ``encoder/`` export and its
    state as ``checkpoints/best.pt``, instead of the last one.
    """

    evaluators: list[dict[str, Any]] = field(default_factory=list)
    every_epochs: NonNegative = 0
    every_steps: NonNegative = 0
    at_start: bool = False
    train_data: dict[str, Any] = field(default_factory=lambda: {"split": "train"})
    test_data: dict[str, Any] = field(default_factory=lambda: {"split": "test"})
    batch_size: Positive = 256
    select_best: dict[str, str] | None = None
    holdout_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.1
