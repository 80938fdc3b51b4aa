"""The training engine: exact resume, the NaN guard, atomic checkpoints, run directory, hooks."""

from __future__ import annotations

import errno

import json
import math
from pathlib import Path

import pytest
import torch

from toolkit import TrainingInterrupted, checkpoint, hookimpl
from toolkit.engine import CHECKPOINT, Trainer, TrainingDiverged, resolve_device
from toolkit.errors import RecipeError
from toolkit.interfaces import ObjectiveOutput
from toolkit.recipe import load_and_resolve
from toolkit.rundir import RunDirectoryError

from helpers import assert_same_state, kill_at, make_trainer

FAST = ["eval.evaluators=[]", "trainer.log_every=100"]


def make_trainer(tiny_recipe, plugins, run_dir: Path, *overrides: str) -> Trainer:
    recipe = load_and_resolve(tiny_recipe, [*FAST, *overrides], plugins)
    return Trainer.from_recipe(recipe, plugins, run_dir, log=open("/dev/null", "w"))


def test_resume_after_a_kill_gives_identical_weights(tiny_recipe, plugins, tmp_path):
    straight = make_trainer(tiny_recipe, plugins, tmp_path / "straight", "trainer.checkpoint_every=3")
    straight.fit()

    # the last checkpoint before the kill is at step 3, in the middle of epoch 0 (4 steps per epoch)
    kill_at(5, make_trainer(tiny_recipe, plugins, tmp_path / "killed", "trainer.checkpoint_every=3"), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=open("/dev/null", "w"))
    assert resumed.step == 3
    resumed.fit()

    assert resumed.step == straight.step == 8
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    straight_moments = straight.optimizer.state_dict()["state"]
    resumed_moments = resumed.optimizer.state_dict()["state"]
    for index in straight_moments:
        assert torch.equal(straight_moments[index]["momentum_buffer"], resumed_moments[index]["momentum_buffer"])


def test_resume_drops_metrics_logged_after_the_checkpoint(tiny_recipe, plugins, tmp_path):
    kill_at(5, make_trainer(tiny_recipe, plugins, tmp_path / "run", "trainer.checkpoint_every=3"), plugins)
    Trainer.resume(tmp_path / "run", plugins, log=open("/dev/null", "w")).fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_recipe, plugins, tmp_path):
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "trainer.checkpoint_every=2")
    real_forward = trainer.model.objective.forward

    def nan_from_step_three(batch, encoder, projector):
        output = real_forward(batch, encoder, projector)
        return ObjectiveOutput(output.loss * math.nan, output.metrics) if trainer.step >= 2 else output

    trainer.model.objective.forward = nan_from_step_three
    with pytest.raises(TrainingDiverged, match=r"step 3 .*last good checkpoint"):
        trainer.fit()
    kept = checkpoint.load(tmp_path / "run" / CHECKPOINT)
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"step": 1}, path)

    def failing_save(state, handle):
        handle.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RunDirectoryError, match=f"cannot write {path}: No space left on device; the disk is full"):
        checkpoint.save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_run_directory_holds_recipe_metrics_checkpoint_and_encoder(tiny_recipe, plugins, tmp_path):
    make_trainer(tiny_recipe, plugins, tmp_path / "run").fit()
    run = tmp_path / "run"
    assert (run / "recipe.yaml").is_file()
    assert (run / CHECKPOINT).is_file()
    assert (run / "encoder" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert {"loss", "lr", "contrastive_acc"} <= records[0].keys()


def test_a_fresh_run_refuses_to_overwrite_an_existing_one(tiny_recipe, plugins, tmp_path):
    make_trainer(tiny_recipe, plugins, tmp_path / "run", "schedule.max_steps=1").fit()
    with pytest.raises(RunDirectoryError, match="--resume"):
        make_trainer(tiny_recipe, plugins, tmp_path / "run")


def test_lifecycle_hooks_fire_in_order(tiny_recipe, plugins, tmp_path):
    calls = []

    class Recorder:
        @hookimpl
        def on_train_start(self, run):
            calls.append("start")

        @hookimpl
        def on_before_optimizer_step(self, run, step):
            assert run.step == step - 1 and all(p.grad is not None for p in run.encoder.parameters())
            calls.append(f"before{step}")

        @hookimpl
        def on_step_end(self, run, step, metrics):
            assert run.step == step and run.total_steps == 2
            calls.append(f"step{step}")

        @hookimpl
        def on_eval_end(self, run, step, metrics):
            calls.append(f"eval{step}")

        @hookimpl
        def on_train_end(self, run, metrics):
            calls.append("end")

    recorder = Recorder()
    plugins.manager.register(recorder)
    try:
        recipe = load_and_resolve(tiny_recipe, ["schedule.max_steps=2", "eval.evaluators=[{name: knn, k: 5}]"], plugins)
        Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w")).fit()
    finally:
        plugins.manager.unregister(recorder)
    assert calls == ["start", "before1", "step1", "before2", "step2", "eval2", "end"]


class ExceptionRecorder:
    """Records the ``on_train_exception`` and ``on_train_end`` calls; fails in the first if told to."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail = fail

    @hookimpl
    def on_train_exception(self, run, exception):
        self.calls.append(("exception", exception))
        if self.fail:
            raise OSError("the tracker's server is gone")

    @hookimpl
    def on_train_end(self, run, metrics):
        self.calls.append(("end", metrics))


def test_a_run_that_fails_calls_on_train_exception_once_and_not_on_train_end(tiny_recipe, plugins, tmp_path):
    recorder = ExceptionRecorder()
    plugins.manager.register(recorder)
    try:
        trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "optimizer.lr=1000000.0", "eval.evaluators=[]")
        with pytest.raises(TrainingDiverged) as caught:
            trainer.fit()
    finally:
        plugins.manager.unregister(recorder)
    assert recorder.calls == [("exception", caught.value)]


def test_a_failing_on_train_exception_hook_does_not_hide_the_training_error(tiny_recipe, plugins, tmp_path, capsys):
    recorder = ExceptionRecorder(fail=True)
    plugins.manager.register(recorder)
    try:
        trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "eval.evaluators=[]")
        trainer.request_stop()  # a stop asked for before the first step: after it, a checkpoint and the stop
        with pytest.raises(TrainingInterrupted, match="stopped by a stop request after step 1"):
            trainer.fit()
    finally:
        plugins.manager.unregister(recorder)
    assert [name for name, _ in recorder.calls] == ["exception"]
    assert "an on_train_exception hook failed (OSError: the tracker's server is gone)" in capsys.readouterr().err


def test_a_hook_that_asks_for_the_trainer_gets_it_with_a_deprecation_warning(tiny_recipe, plugins, tmp_path):
    seen = []

    class OldLogger:
        @hookimpl
        def on_step_end(self, trainer, step, metrics):
            seen.append((type(trainer).__name__, step))

    with pytest.warns(DeprecationWarning, match="take `run`"):
        plugins.manager.register(OldLogger(), name="old-logger")
    try:
        recipe = load_and_resolve(tiny_recipe, ["schedule.max_steps=1", *FAST], plugins)
        Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w")).fit()
    finally:
        plugins.manager.unregister(name="old-logger")
    assert seen == [("Trainer", 1)]


def test_gradient_accumulation_runs_the_same_number_of_optimizer_steps(tiny_recipe, plugins, tmp_path):
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "trainer.accumulate_grad_batches=2")
    trainer.fit()
    assert trainer.step == 8
    assert trainer.plan.micro_batch_size == 32


def test_warmup_then_cosine_learning_rate_reaches_the_floor(tiny_recipe, plugins, tmp_path):
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "schedule.warmup_steps=2",
                           "schedule.min_lr_ratio=0.1")
    trainer.fit()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(0.05)  # logged after the step: warmup reached the full lr
    assert lrs[-1] == pytest.approx(0.005)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_explicit_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def draw_random_numbers_in_forward(trainer: Trainer) -> Trainer:
    """Make the loss depend on the global generator, as dropout does (SimCSE, BYOL heads)."""
    real_forward = trainer.model.objective.forward

    def noisy(batch, encoder, projector):
        output = real_forward(batch, encoder, projector)
        return ObjectiveOutput(output.loss * (1 + torch.rand(())), output.metrics)

    trainer.model.objective.forward = noisy
    return trainer


def test_resume_is_exact_when_the_model_draws_random_numbers(tiny_recipe, plugins, tmp_path):
    straight = draw_random_numbers_in_forward(make_trainer(tiny_recipe, plugins, tmp_path / "a",
                                                           "trainer.checkpoint_every=3"))
    straight.fit()
    kill_at(4, draw_random_numbers_in_forward(make_trainer(tiny_recipe, plugins, tmp_path / "b",
                                                           "trainer.checkpoint_every=3")), plugins)
    resumed = draw_random_numbers_in_forward(Trainer.resume(tmp_path / "b", plugins, log=open("/dev/null", "w")))
    resumed.fit()
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())


def test_gradient_clipping_bounds_the_update(tiny_recipe, plugins, tmp_path):
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "trainer.clip_grad_norm=1.0e-6",
                           "optimizer.weight_decay=0", "optimizer.momentum=0", "schedule.max_steps=1")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.model.parameters(), before)])
    assert 0 < change.norm() <= 0.05 * 1e-6 * 1.001  # lr x max gradient norm


@pytest.mark.parametrize("every", ["eval.every_epochs=1", "eval.every_steps=4"])
def test_periodic_evaluation_runs_every_n_epochs_and_once_at_the_end(tiny_recipe, plugins, tmp_path, every):
    recipe = load_and_resolve(tiny_recipe, [every, "schedule.epochs=3"], plugins)
    Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w")).fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4, 8, 12]


@pytest.mark.parametrize("override", ["optimizer={name: adamw, lr: 1.0e-3}", "optimizer={name: lars, lr: 0.3}",
                                      "trainer.precision=bf16"])
def test_optimizers_and_bf16_autocast_train(tiny_recipe, plugins, tmp_path, override):
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", override, "schedule.max_steps=2")
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 2 and all(math.isfinite(r["loss"]) for r in records)


def test_channels_last_trains_like_the_default_layout_and_exports_the_same_keys(tiny_recipe, plugins, tmp_path):
    losses, states = [], []
    for layout in ("false", "true"):
        trainer = make_trainer(tiny_recipe, plugins, tmp_path / layout, f"trainer.channels_last={layout}",
                               "schedule.max_steps=2")
        trainer.fit()
        records = (tmp_path / layout / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(line)["loss"] for line in records])
        states.append(trainer.model.state_dict())
    conv = trainer.model.encoder.net.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)  # the same arithmetic in another memory order
    assert states[0].keys() == states[1].keys()


def test_select_best_keeps_the_encoder_of_the_best_evaluation(tiny_recipe, plugins, tmp_path):
    recipe = load_and_resolve(tiny_recipe, ["eval.at_start=true", "eval.every_epochs=1", "schedule.epochs=3",
                                            "eval.select_best={metric: knn_top1, mode: max}"], plugins)
    trainer = Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w"))
    trainer.fit()
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"].startswith("eval")]
    best = max(evals, key=lambda r: r["knn_top1"])  # the first of equal values wins, as in the engine
    exported = json.loads((tmp_path / "run" / "encoder" / "encoder.json").read_text())
    assert exported["step"] == best["step"] == trainer.best["step"]
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")["step"] == best["step"]


def test_select_best_with_a_metric_no_evaluator_reports_is_a_clear_error(tiny_recipe, plugins, tmp_path):
    recipe = load_and_resolve(tiny_recipe, ["eval.at_start=true", "eval.select_best={metric: sts_spearman}"], plugins)
    with pytest.raises(RecipeError, match="evaluators report only knn_top1"):
        Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w")).fit()
