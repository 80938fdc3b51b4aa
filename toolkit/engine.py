"""The one training loop. It never names a method: everything it trains comes from a recipe.

A run directory (:mod:`toolkit.rundir`) holds ``recipe.yaml`` (resolved), ``metrics.jsonl``,
``history.jsonl``, ``checkpoints/last.pt`` and, at the end, ``encoder/`` (the export: of the last
step, or of the best evaluation with ``eval.select_best``, whose state is also kept as
``checkpoints/best.pt``). ``Trainer.resume(run_dir)`` continues exactly where the last checkpoint
stopped: weights, optimizer, schedule, random state, data position and the metrics log.
Evaluation leaves no trace in that state (it runs with the random generators saved and
restored), so a resumed run matches an uninterrupted one whatever it evaluates and when.

Only :data:`RESUMABLE` settings may differ between a checkpoint's recipe and the recipe it is
resumed with; they are applied to the restored optimizer and schedule and recorded in
``history.jsonl``. Checkpoints are written only from finite state: a run whose weights, buffers
or optimizer state turn NaN or infinite stops, and its last checkpoint is the last good one.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
import torch
from torch import nn

from toolkit import checkpoint, cpu, distributed
from toolkit.config import EvalConfig, ScheduleConfig, TrainerConfig
from toolkit.errors import DataError, RecipeError, SelfsupError, TrainingError, TrainingInterrupted
from toolkit.data import BatchFailure, BatchPlan, ViewBatches, epoch_loader
from toolkit.evaluation import FeatureContext, run_evaluators
from toolkit.export import export_encoder
from toolkit.interfaces import (Augmentation, Batch, DataSource, Encoder, Objective, ObjectiveOutput, Projector,
                                 RunContext)
from toolkit.optim import parameter_groups, warmup_cosine
from toolkit.progress import Progress, duration
from toolkit.plugins import Plugins
from toolkit.recipe import Recipe, flatten, load, resolve
from toolkit.rundir import RECIPE, RunDirectory, RunDirectoryError
from toolkit.sync_batchnorm import convert_sync_batchnorm

CHECKPOINT = Path("checkpoints") / "last.pt"
BEST_CHECKPOINT = Path("checkpoints") / "best.pt"
RESUMABLE = ("optimizer.lr", "trainer.clip_grad_norm", "trainer.precision", "schedule.epochs", "schedule.max_steps",
             "trainer.log_every", "trainer.checkpoint_every", "trainer.num_workers", "trainer.report",
             "eval.every_steps", "eval.every_epochs")
"""Recipe keys that may change when a run is resumed (``selfsup train --resume RUN key=value``)."""


class TrainingDiverged(TrainingError):
    """The loss or the model state became NaN or infinite; the last good checkpoint is kept."""


class SelfSupervisedModel(nn.Module):
    """Encoder, projector and objective as one module: one state dict, one DDP wrapper."""

    def __init__(self, encoder: Encoder, projector: Projector, objective: Objective) -> None:
        super().__init__()
        self.encoder, self.projector, self.objective = encoder, projector, objective

    def forward(self, batch: Batch) -> ObjectiveOutput:
        return self.objective(batch, self.encoder, self.projector)


class Trainer:
    """Builds every component of a recipe and runs training, evaluation and export."""

    def __init__(self, recipe: Recipe, plugins: Plugins, run_dir: Path, log: TextIO = sys.stderr,
                 directory: RunDirectory | None = None) -> None:
        distributed.init_from_environment(recipe.block("trainer")["device"])
        self.is_main = distributed.is_main()
        self.recipe, self.plugins, self.run_dir = recipe, plugins, Path(run_dir)
        self.directory = directory or RunDirectory(self.run_dir)
        self.log = log if self.is_main else open(os.devnull, "w")
        self.config: TrainerConfig = recipe.settings("trainer")
        self.schedule: ScheduleConfig = recipe.settings("schedule")
        self.eval_config: EvalConfig = recipe.settings("eval")
        _seed_everything(self.config.seed)  # the same initial weights on every process
        self.device = resolve_device(self.config.device)
        self.autocast_dtype = _autocast_dtype(self.config.precision, self.device)

        self.encoder: Encoder = recipe.build("encoder")
        self.source: DataSource = self._data_source("data")
        if self.source.split_note:
            print(f"data: {self.source.split_note}", file=self.log, flush=True)
        self.augmentation: Augmentation = recipe.build("augmentation")
        projector = recipe.build("projector", input_dim=self.encoder.output_dim)
        self.plan = BatchPlan(len(self.source), self.config.batch_size, self.config.seed,
                              self.config.accumulate_grad_batches, distributed.rank(), distributed.world_size())
        self.total_steps = self.plan.steps_per_epoch * self.schedule.epochs
        if self.schedule.max_steps is not None:
            self.total_steps = min(self.total_steps, self.schedule.max_steps)
        objective = recipe.build("objective", encoder=self.encoder, projector=projector,
                                 dataset_size=len(self.source), num_classes=self.source.num_classes,
                                 total_steps=self.total_steps)
        self.model = SelfSupervisedModel(self.encoder, projector, objective).to(self.device)
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.config.compile:
            self.encoder.compile()  # in place: parameter names, checkpoints and exports stay as they are
        self.parallel_model = self._wrap_for_processes(self.model)
        self.evaluators = [recipe.build(f"eval.evaluators.{i}") for i in range(len(self.eval_config.evaluators))]
        self.optimizer = recipe.build("optimizer", params=parameter_groups([self.model]), model=self.model)
        warmup = self.schedule.warmup_steps
        if warmup is None:
            warmup = round(self.schedule.warmup_epochs * self.plan.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, warmup, self.schedule.min_lr_ratio))
        self.batches = ViewBatches(self.source, self.augmentation, self.encoder.collate(), self.plan)
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.last_eval: dict[str, float] = {}
        self.start_eval: dict[str, float] = {}
        self.best: dict[str, float] = {}  # {"value", "step"} of the eval.select_best metric
        self.checkpoint_step: int | None = None  # the step of the last checkpoint written or restored
        self.stop_signal: int | None = None  # set by request_stop
        self.progress: Progress | None = None  # the bar (or plain lines) of fit()
        self.run = RunContext(recipe.values, self.run_dir, self.device, self.model.encoder, self.model.projector,
                              self.model.objective, self.optimizer, self.total_steps)
        torch.manual_seed(self.config.seed + distributed.rank())  # distinct dropout masks per process

    @classmethod
    def from_recipe(cls, recipe: Recipe, plugins: Plugins, run_dir: Path | None = None, **kwargs: Any) -> Trainer:
        """A fresh run in ``run_dir`` (default ``trainer.output_dir`` or ``runs/<name>``)."""
        run_dir = Path(run_dir or recipe.block("trainer")["output_dir"] or Path("runs") / recipe.name)
        distributed.init_from_environment(recipe.block("trainer")["device"])
        directory = RunDirectory(run_dir)
        if distributed.is_main():
            directory.lock()
        if (run_dir / CHECKPOINT).exists():
            raise RunDirectoryError(f"{run_dir} already holds a run; continue it with `selfsup train --resume "
                                  f"{run_dir}` or choose another directory (trainer.output_dir=...)")
        distributed.barrier()  # every process has looked before the main one writes
        if distributed.is_main():
            directory.write_recipe(recipe.to_yaml())
            directory.truncate_metrics(0, 0)
            directory.record("start", step=0, recipe=recipe.name,
                             machine=machine_info(recipe.block("trainer")["device"]))
        distributed.barrier()
        return cls(recipe, plugins, run_dir, directory=directory, **kwargs)

    @classmethod
    def resume(cls, run_dir: Path, plugins: Plugins, overrides: Sequence[str] = (), trust_plugins: bool = False,
               **kwargs: Any) -> Trainer:
        """The run in ``run_dir``, restored from its last checkpoint (or started from step 0 if it
        never wrote one). ``overrides`` may change the :data:`RESUMABLE` keys; a recipe that was
        edited elsewhere is refused with the differences."""
        run_dir = Path(run_dir)
        recipe = resolve(load(run_dir / RECIPE, overrides), plugins, trust_plugins=trust_plugins)
        distributed.init_from_environment(recipe.block("trainer")["device"])
        directory = RunDirectory(run_dir)
        if distributed.is_main():
            directory.lock()
        state = checkpoint.load(run_dir / CHECKPOINT) if (run_dir / CHECKPOINT).exists() else None
        changed = _recipe_changes(state.get("recipe") if state else None, recipe.values)
        refused = [key for key in changed if key not in RESUMABLE]
        if refused:
            listing = "\n".join(f"  {key}: {changed[key][0]!r} -> {changed[key][1]!r}" for key in refused)
            raise RecipeError(f"{run_dir / RECIPE} (with the overrides given) differs from the recipe the checkpoint "
                              f"was trained with:\n{listing}\nA run can only resume with a change of "
                              f"{', '.join(RESUMABLE)}; undo the other changes, or start a new run")
        trainer = cls(recipe, plugins, run_dir, directory=directory, **kwargs)
        if state is not None:
            trainer.load_state(state)
            trainer._apply_schedule_changes(changed)
        if trainer.is_main:
            directory.truncate_metrics(state.get("metrics_size") if state else 0, trainer.step)
            if changed or (state is None and overrides):
                directory.write_recipe(recipe.to_yaml())
            directory.record("resume" if state else "start", step=trainer.step,
                             changed={key: list(values) for key, values in changed.items()},
                             machine=machine_info(recipe.block("trainer")["device"]))
        return trainer

    def request_stop(self, signal_number: int | None = None) -> None:
        """Stop after the current optimizer step, with a checkpoint (safe to call from a signal handler)."""
        self.stop_signal = signal_number or 0

    def fit(self) -> dict[str, float]:
        """Train to ``total_steps``; return the final evaluation metrics.

        Training applies the recipe's process-wide CPU settings (``trainer.flush_denormal``,
        ``trainer.tune_malloc``, :mod:`toolkit.cpu`); building a Trainer (to evaluate or export)
        changes nothing outside it."""
        cpu.configure(self.config.flush_denormal, self.config.tune_malloc)  # asked for by the recipe (the default)
        self._call_hook("on_train_start", run=self._run_context(), trainer=self)
        # a bar on a terminal; elsewhere the `step N/M | ...` lines of _log_progress, and nothing more
        self.progress = Progress(self.total_steps, self.recipe.name, unit="step", stream=self.log, initial=self.step,
                                 every_s=math.inf)
        try:
            return self._fit()
        except BaseException as exception:
            self._report_exception(exception)
            raise
        finally:
            self.progress.close()
            self.progress = None

    def _report_exception(self, exception: BaseException) -> None:
        """``on_train_exception``; a hook's own failure is said, not raised over ``exception``."""
        try:
            self._call_hook("on_train_exception", run=self._run_context(), exception=exception)
        except Exception as failure:
            print(f"warning: an on_train_exception hook failed ({type(failure).__name__}: {failure}); "
                  f"the training's own error follows", file=sys.stderr)

    def _fit(self) -> dict[str, float]:
        assert self.progress is not None
        if self.step == 0 and self.eval_config.at_start and self.evaluators:
            self.start_eval = self._evaluate_on_main(tag="eval_start")
        window_start, window_steps = time.perf_counter(), 0
        while self.step < self.total_steps:
            loader = epoch_loader(self.batches, self.epoch, self.step_in_epoch, self.config.num_workers,
                                  pin_memory=self.device.type == "cuda")
            micro, losses, metric_sums, skipped = 0, [], {}, 0
            for batch in loader:
                if isinstance(batch, BatchFailure):  # a data error, raised as in a single process
                    raise batch.error if isinstance(batch.error, SelfsupError) else DataError(str(batch.error))
                skipped += self._report_skipped(batch.skipped)
                output = self._forward_backward(batch, sync=micro == self.plan.micro_batches - 1)
                losses.append(output.loss.detach())
                for key, value in output.metrics.items():
                    metric_sums[key] = metric_sums.get(key, 0.0) + float(value) / self.plan.micro_batches
                micro += 1
                if micro < self.plan.micro_batches:
                    continue
                # the loss and metrics of the global batch: the mean over processes' equal shards;
                # "stop" is above 0 when any process was asked to stop, so all of them stop together
                means = distributed.all_reduce_mean({**metric_sums, "loss": torch.stack(losses).mean().item(),
                                                     "stop": float(self.stop_signal is not None),
                                                     "data_errors": float(skipped)})
                loss, stop = means.pop("loss"), means.pop("stop") > 0
                data_errors = round(means.pop("data_errors") * distributed.world_size())  # a sum over processes
                self._optimizer_step(loss)
                metrics = {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
                metrics.update((key, means[key]) for key in metric_sums)
                if data_errors:
                    metrics["data_errors"] = data_errors
                micro, losses, metric_sums, skipped = 0, [], {}, 0
                window_steps += 1
                self.progress.update(1, loss=f"{loss:.4f}", lr=f"{metrics['lr']:.3g}")
                if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    metrics["samples_per_s"] = window_steps * self.plan.batch_size / max(elapsed, 1e-9)
                    self._log_progress(metrics, elapsed / window_steps)
                    window_start, window_steps = time.perf_counter(), 0
                self._append_metrics({"kind": "train", "step": self.step, "epoch": self.epoch, **metrics})
                self._call_hook("on_step_end", run=self._run_context(), trainer=self, step=self.step, metrics=metrics)
                epoch_done = self.step_in_epoch == self.plan.steps_per_epoch
                if epoch_done:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                if self._evaluation_due(epoch_done):
                    self._evaluate_on_main()
                    window_start, window_steps = time.perf_counter(), 0
                if stop:
                    self._stop()
                if self.step % self.config.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()  # after the evaluation of this step, so a resume does not repeat it
                if epoch_done or self.step >= self.total_steps:
                    break
        self.save_checkpoint()
        final = self._evaluate_on_main() if self.evaluators else {}
        self.progress.close()
        if self.is_main:
            if self.eval_config.select_best is None:
                self.export(self.run_dir / "encoder")
            self._print_summary(final)
            self.directory.record("finished", step=self.step)
        self._call_hook("on_train_end", run=self._run_context(), trainer=self, metrics=final)
        distributed.barrier()
        return final

    def _evaluation_due(self, epoch_done: bool) -> bool:
        """A periodic evaluation after this step (the last step has the final one instead)."""
        if not self.evaluators or self.step >= self.total_steps:
            return False
        every_steps, every_epochs = self.eval_config.every_steps, self.eval_config.every_epochs
        return bool((every_steps and self.step % every_steps == 0)
                    or (epoch_done and every_epochs and self.epoch % every_epochs == 0))

    def _stop(self) -> None:
        self.save_checkpoint()
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a stop request"
        if self.is_main:
            self.directory.record("interrupted", step=self.step, signal=name)
        raise TrainingInterrupted(f"stopped by {name} after step {self.step}/{self.total_steps}; checkpoint written "
                                  f"to {self.run_dir / CHECKPOINT}. Continue with `selfsup train --resume "
                                  f"{self.run_dir}`", self.stop_signal)

    def _evaluate_on_main(self, tag: str = "eval") -> dict[str, float]:
        """Evaluate on the main process while the others wait; {} on the others."""
        metrics = self.evaluate(tag) if self.is_main else {}
        distributed.barrier()
        return metrics

    def _call_hook(self, name: str, **kwargs: Any) -> None:
        """Lifecycle hooks run on the main process only (loggers must not write N times)."""
        if self.is_main:
            getattr(self.plugins.hook, name)(**kwargs)

    def evaluate(self, tag: str = "eval") -> dict[str, float]:
        """Run the recipe's evaluators on the current encoder; log and return their metrics."""
        context = FeatureContext(
            self.encoder, self.augmentation,
            {"train": lambda: self._data_source("eval.train_data"),
             "test": lambda: self._data_source("eval.test_data")},
            self.device, self.eval_config.batch_size, self.autocast_dtype, log=self.log)
        started = time.perf_counter()
        with checkpoint.rng_preserved():  # evaluation must not shift the training's random draws
            metrics = run_evaluators(self.evaluators, context,
                                     lambda line: self._say(f"[{tag} step {self.step}] {line}"))
        self._append_metrics({"kind": tag, "step": self.step, "epoch": self.epoch, **metrics})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self._say(f"[{tag} step {self.step}] {shown}  ({time.perf_counter() - started:.1f}s)")
        self.last_eval = metrics
        if self.eval_config.select_best is not None:
            self._keep_if_best(metrics)
        self._call_hook("on_eval_end", run=self._run_context(), trainer=self, step=self.step, metrics=metrics)
        return metrics

    def _keep_if_best(self, metrics: dict[str, float]) -> None:
        metric, mode = self.eval_config.select_best["metric"], self.eval_config.select_best["mode"]
        if metric not in metrics:
            raise RecipeError(f"eval.select_best.metric is {metric!r} but the evaluators report only "
                           f"{', '.join(metrics)}; pick one of those")
        value = metrics[metric]
        if self.best and not (value > self.best["value"] if mode == "max" else value < self.best["value"]):
            return
        self.best = {"value": value, "step": self.step}
        checkpoint.save_atomic(self.state_dict([checkpoint.capture_rng()]), self.run_dir / BEST_CHECKPOINT)
        self.export(self.run_dir / "encoder")
        self._say(f"[best {metric} {value:.4f} at step {self.step}: exported to {self.run_dir / 'encoder'}]")

    def export(self, out_dir: Path) -> Path:
        return export_encoder(self.encoder, self.recipe.block("encoder"), self.recipe.block("augmentation"),
                              out_dir, self.plugins,
                              {"recipe": self.recipe.name, "step": self.step, "metrics": self.last_eval})

    def state_dict(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything a resume needs; ``rng`` holds each process's random state, in rank order."""
        return {
            "format_version": 1,
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "start_eval": self.start_eval,
            "best": self.best,
            "recipe": self.recipe.values,  # what the run trained with: a resume compares against it
            "metrics_size": self.directory.metrics_size(),  # metrics.jsonl up to this checkpoint
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        if self.step_in_epoch == self.plan.steps_per_epoch:  # written at an epoch's end by an older version
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.checkpoint_step = self.step
        self.start_eval = state.get("start_eval", {})
        self.best = state.get("best", {})
        rng = state["rng"]  # a run resumed on other process counts falls back to rank 0's state
        checkpoint.restore_rng(rng[distributed.rank()] if len(rng) == distributed.world_size() else rng[0])

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/last.pt`` (main process; every process must call this).

        Refuses state that is not finite: the run stops with :class:`TrainingDiverged` and the
        previous checkpoint stays the last good one."""
        path = self.run_dir / CHECKPOINT
        broken = checkpoint.non_finite({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})
        if broken:
            if self.is_main:
                self.directory.record("diverged", step=self.step, non_finite=broken[:10])
            raise TrainingDiverged(f"the model state became NaN or infinite by step {self.step} (epoch {self.epoch}: "
                                   f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}); training stopped "
                                   f"and {self._last_good()}. {self._divergence_advice()}")
        rng = distributed.all_gather_object(checkpoint.capture_rng())
        if self.is_main:
            checkpoint.save_atomic(self.state_dict(rng), path)
        distributed.barrier()
        self.checkpoint_step = self.step
        return path

    def _last_good(self) -> str:
        if self.checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {self.run_dir / CHECKPOINT} (step {self.checkpoint_step})"

    def _divergence_advice(self) -> str:
        return (f"Lower the learning rate, clip gradients or train in fp32, e.g. "
                f"`selfsup train --resume {self.run_dir} "
                f"optimizer.lr={self.recipe.block('optimizer').get('lr', 0.1) / 10:g} trainer.clip_grad_norm=1.0`, "
                f"or start again")

    def _apply_schedule_changes(self, changed: dict[str, tuple[Any, Any]]) -> None:
        """After ``load_state``: carry a changed learning rate or schedule length into the
        restored optimizer and scheduler (whose state holds the old values)."""
        if not changed:
            return
        if "optimizer.lr" in changed:
            old, new = changed["optimizer.lr"]
            for group in self.optimizer.param_groups:
                group["initial_lr"] *= new / old
            self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        step = self.scheduler.last_epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def close(self) -> None:
        """After a successful run, on every process: free the DDP wrapper, which holds the
        process group, while every peer is still there, then leave the group. (Left to
        interpreter exit, a gloo group's teardown once waited forever for a peer that had
        already gone.)"""
        if self.parallel_model is not self.model:
            self.parallel_model = self.model
            gc.collect()
        distributed.shutdown()
        self.directory.unlock()

    def _forward_backward(self, batch: Batch, sync: bool) -> ObjectiveOutput:
        """Forward and backward of one micro-batch; gradients are synchronised across processes
        only on the last micro-batch of a step (``sync``)."""
        batch = self.augmentation.on_device(batch.to(self.device, non_blocking=True))
        if self.config.channels_last:
            batch.views = [_channels_last(view) for view in batch.views]
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        no_sync = getattr(self.parallel_model, "no_sync", None)
        with autocast, (contextlib.nullcontext() if sync or no_sync is None else no_sync()):
            output = self.parallel_model(batch)
            (output.loss / self.plan.micro_batches).backward()
        return output

    def _wrap_for_processes(self, model: SelfSupervisedModel) -> nn.Module:
        """DistributedDataParallel under torchrun (with SyncBatchNorm if asked); else ``model``."""
        if not distributed.is_distributed():
            return model
        if self.config.sync_batchnorm:
            model = convert_sync_batchnorm(model, self.device)
            self.model = model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=self.config.find_unused_parameters)

    def _optimizer_step(self, loss: float) -> None:
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            if self.is_main:
                self.directory.record("diverged", step=self.step + 1, loss=str(loss))
            raise TrainingDiverged(f"loss became {loss} at step {self.step + 1} (epoch {self.epoch}); training "
                                   f"stopped and {self._last_good()}. {self._divergence_advice()}")
        if self.config.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.plugins.hook.on_before_optimizer_step(run=self._run_context(), step=self.step + 1)  # every process
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.step_in_epoch += 1
        self.model.objective.after_step(self.step, self.total_steps, self.model.encoder, self.model.projector)

    def _data_source(self, key: str) -> DataSource:
        """``data``, or an evaluation data source (``eval.train_data``, ``eval.test_data``)."""
        # a recipe that never evaluates trains on every item: there is nothing to hold out for
        holdout = self.eval_config.holdout_fraction if self.eval_config.evaluators else 0.0
        return self.recipe.build(key, input_spec=self.encoder.input_spec, holdout_fraction=holdout, device=self.device)

    def _run_context(self) -> RunContext:
        self.run.step, self.run.epoch = self.step, self.epoch
        return self.run

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if self.is_main:
            self.directory.append_metrics(record)

    def _log_progress(self, metrics: dict[str, float], seconds_per_step: float) -> None:
        """Every ``log_every`` steps: the bar's figures on a terminal, else one line (tests and log
        readers parse it): ``step 8/8 | epoch 1 | loss 4.1 | lr 0.05 | 940 samples/s | ETA 0m00s``."""
        assert self.progress is not None
        if self.progress.is_bar:
            self.progress.update(0, loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.3g}",
                                 samples_s=f"{metrics['samples_per_s']:.0f}")
            return
        eta = duration(seconds_per_step * (self.total_steps - self.step))
        extra = "".join(f" | {k} {v:.4g}" for k, v in metrics.items() if k not in ("loss", "lr", "samples_per_s"))
        print(f"step {self.step}/{self.total_steps} | epoch {self.epoch} | loss {metrics['loss']:.4f} | "
              f"lr {metrics['lr']:.4g} | {metrics['samples_per_s']:.0f} samples/s | ETA {eta}{extra}",
              file=self.log, flush=True)

    def _report_skipped(self, reports: list[str]) -> int:
        """Print the unreadable items a batch replaced (each process its own; the main one above
        the progress bar) and return how many there were."""
        for report in reports:
            if self.is_main:
                self._say(f"data: skipped {report}")
            else:
                print(f"data: skipped {report}", file=sys.stderr, flush=True)
        return len(reports)

    def _say(self, line: str) -> None:
        """One line of the run's log, above the progress bar while there is one."""
        if self.progress is not None:
            self.progress.write(line)
        else:
            print(line, file=self.log, flush=True)

    def _print_summary(self, final: dict[str, float]) -> None:
        if not final:
            return
        rows = ([f"{'metric':<16}{'at start':>12}{'trained':>12}"] if self.start_eval
                else [f"{'metric':<16}{'trained':>12}"])
        for key, value in final.items():
            start = f"{self.start_eval[key]:>12.4f}" if key in self.start_eval else ""
            rows.append(f"{key:<16}{start}{value:>12.4f}")
        if self.best:
            rows.append(f"kept the encoder of step {self.best['step']} "
                        f"({self.eval_config.select_best['metric']} {self.best['value']:.4f})")
        print(f"\nfinal evaluation ({self.recipe.name}, step {self.step}):\n  " + "\n  ".join(rows), file=self.log,
              flush=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise RecipeError(f"trainer.device: {error}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError("trainer.device is cuda but no CUDA device is available; use trainer.device=auto or cpu")
    return device


def machine_info(device: str) -> dict[str, Any]:
    """Where a run trains, for ``history.jsonl`` and the report: OS, Python, torch, CPUs, the
    training device (its name for a GPU) and the number of processes."""
    resolved = resolve_device(device)
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cpus": os.cpu_count(), "device": str(resolved),
                            "processes": distributed.world_size()}
    if resolved.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(resolved)
    return info


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _channels_last(view: Any) -> Any:
    """A 4-D tensor ``(N, C, H, W)`` in channels-last layout; anything else as it is."""
    if isinstance(view, torch.Tensor) and view.dim() == 4:
        return view.contiguous(memory_format=torch.channels_last)
    return view


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _recipe_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted.key: (before, after)}`` for every setting that differs (``{}`` without ``before``)."""
    if before is None:
        return {}
    flat_before, flat_after = flatten(before), flatten(after)
    return {key: (flat_before.get(key), flat_after.get(key)) for key in sorted(flat_before.keys() | flat_after.keys())
            if flat_before.get(key) != flat_after.get(key)}
