"""The Python API: `toolkit.train`, `evaluate`, `embed`, `report` and the `Run` they describe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

import toolkit
from toolkit.recipe import load, resolve

from conftest import RECIPES, ROOT
from helpers import QUIET


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> toolkit.Run:
    return toolkit.train(RECIPES / "tiny.yaml", ["eval.at_start=true", "schedule.max_steps=4"],
                         tmp_path_factory.mktemp("api") / "run", report=True, log=QUIET)


def test_train_returns_the_run_with_its_metrics_encoder_and_report(run):
    assert {"knn_top1", "knn_top5", "linear_top1"} <= run.metrics.keys() and run.start_metrics.keys() == \
        run.metrics.keys()
    assert [r["step"] for r in run.records("train")] == [1, 2, 3, 4]
    assert (run.encoder_path / "encoder.json").is_file() and run.load_encoder().output_dim == 32
    assert run.report_path == run.run_dir / "report" / "index.html"


def test_evaluate_gives_the_metrics_of_the_last_checkpoint_with_overrides(run):
    metrics = toolkit.evaluate(run.run_dir, ["eval.evaluators=[{name: knn, k: 20}]"], log=QUIET)
    assert set(metrics) == {"knn_top1", "knn_top5"}
    assert run.records("eval_standalone")[-1]["knn_top1"] == metrics["knn_top1"]


def test_a_recipe_given_as_a_dict_resolves_as_its_file_does(plugins, monkeypatch):
    monkeypatch.chdir(RECIPES)
    values = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    values["data"]["path"] = "../data/cifar10_mini_jpeg.npz"  # relative to the working directory now
    from_dict = resolve(load(values, ["trainer.batch_size=32"]), plugins).values
    from_file = resolve(load(RECIPES / "tiny.yaml", ["trainer.batch_size=32"]), plugins).values
    assert from_dict == from_file


def test_a_bad_key_in_a_dict_recipe_names_the_key(monkeypatch):
    monkeypatch.chdir(RECIPES)  # its extends: base/cifar10.yaml
    with pytest.raises(toolkit.RecipeError, match=r"recipe \(a dict\): trainer.batchsize: unknown key"):
        toolkit.train({**yaml.safe_load((RECIPES / "tiny.yaml").read_text()), "trainer": {"batchsize": 8}},
                      log=QUIET)


def test_resume_continues_a_run_with_a_longer_schedule(run):
    resumed = toolkit.train(None, ["schedule.max_steps=6"], run.run_dir, resume=True, report=False, log=QUIET)
    assert [r["step"] for r in resumed.records("train")] == [1, 2, 3, 4, 5, 6]


def test_training_installs_no_signal_handler_and_importing_changes_nothing(run):
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    toolkit.train(RECIPES / "tiny.yaml", ["schedule.max_steps=1", "eval.evaluators=[]"], run.run_dir.parent / "x",
                  log=QUIET)
    assert {number: signal.getsignal(number) for number in handlers} == handlers
    probe = ("import os, signal, sys; before = (dict(os.environ), signal.getsignal(signal.SIGINT)); import toolkit; "
             "toolkit.train, toolkit.evaluate, toolkit.embed, toolkit.report, toolkit.Run; "
             "assert (dict(os.environ), signal.getsignal(signal.SIGINT)) == before; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={k: v for k, v in os.environ.items() if not k.startswith("SELFSUP_")})
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
