"""The built-in TensorBoard logger: a plugin made only of lifecycle hooks."""

from __future__ import annotations

import pytest

from toolkit.engine import Trainer
from toolkit.recipe import load_and_resolve

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install selfsup-toolkit[tensorboard])")


def test_training_and_evaluation_metrics_reach_tensorboard(tiny_recipe, plugins, tmp_path):
    assert "tensorboard" in plugins.infos and plugins.infos["tensorboard"].error is None
    recipe = load_and_resolve(tiny_recipe, ["eval.at_start=true", "eval.evaluators=[{name: knn, k: 5}]"], plugins)
    Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w")).fit()

    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("eval/knn_top1")] == [0, 8]


def test_a_stopped_run_closes_its_event_file_and_the_resume_writes_a_new_one(tiny_recipe, plugins, tmp_path):
    from toolkit import TrainingInterrupted

    recipe = load_and_resolve(tiny_recipe, ["eval.evaluators=[]"], plugins)
    trainer = Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w"))
    trainer.request_stop()
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    trainer.directory.unlock()
    Trainer.resume(tmp_path / "run", plugins, log=open("/dev/null", "w")).fit()  # in the same process, as a notebook
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert sorted({e.step for e in events.Scalars("train/loss")}) == list(range(1, 9))
