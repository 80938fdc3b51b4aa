"""The tiny recipe through the `selfsup` command: train, kill, resume, eval, export, load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toolkit import load_encoder, load_eval_transform
from toolkit.cli import main
from toolkit.engine import CHECKPOINT

from conftest import RECIPES, needs_shared_data

pytestmark = pytest.mark.slow


def selfsup(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"
    result = selfsup("train", str(recipe), "eval.at_start=true", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_train_shows_progress_and_a_before_after_evaluation(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "eval_start" and kinds[-1] == "eval"
    assert {"knn_top1", "knn_top5", "linear_top1"} <= records[-1].keys()


def test_train_prints_step_loss_throughput_and_eta(tiny_recipe, tmp_path):
    result = selfsup("train", str(tiny_recipe), "--run-dir", str(tmp_path / "run"))
    progress = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert progress and all(k in progress[-1] for k in ("step 8/8", "loss", "samples/s", "ETA"))
    assert "random init" not in result.stderr and "knn_top1" in result.stderr


def test_eval_reports_knn_and_linear_probe_as_json(trained_run, capsys):
    assert main(["eval", str(trained_run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["knn_top1"] <= 1.0 and 0.0 <= metrics["linear_top1"] <= 1.0


def test_export_round_trip_gives_the_same_embeddings(trained_run, tmp_path, plugins):
    assert main(["export", str(trained_run), "--out", str(tmp_path / "exported")]) == 0
    metadata = json.loads((tmp_path / "exported" / "encoder.json").read_text())
    assert metadata["encoder"]["name"] == "resnet18" and metadata["output_dim"] == 32
    encoder = load_encoder(tmp_path / "exported")
    transform = load_eval_transform(tmp_path / "exported")
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    x = transform(image)[None]
    trained = torch.load(trained_run / CHECKPOINT, weights_only=True, map_location="cpu")["model"]
    weights = load_file(tmp_path / "exported" / "model.safetensors")
    assert all(torch.equal(weights[k], trained[f"encoder.{k}"]) for k in weights)
    with torch.no_grad():
        assert encoder(x).shape == (1, 32)
        assert torch.equal(encoder(x), load_encoder(trained_run / "encoder")(x))


def test_resume_after_sigkill_finishes_with_the_weights_of_an_uninterrupted_run(tiny_recipe, tmp_path):
    settings = ["schedule.epochs=6", "trainer.checkpoint_every=2", "eval.evaluators=[]"]
    straight = selfsup("train", str(tiny_recipe), *settings, "--run-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "train", str(tiny_recipe), *settings,
                                "--run-dir", str(killed_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed_dir / CHECKPOINT).exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resumed = selfsup("train", "--resume", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr

    a = load_file(tmp_path / "straight" / "encoder" / "model.safetensors")
    b = load_file(killed_dir / "encoder" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_recipe_key_exits_2_with_file_line_and_key(tmp_path, tiny_recipe):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"extends: {tiny_recipe}\ntrainer:\n  batchsize: 32\n")
    result = selfsup("train", str(recipe))
    assert result.returncode == 2
    assert f"{recipe}:3: trainer.batchsize: unknown key; did you mean 'batch_size'?" in result.stderr


def test_resume_of_a_directory_without_a_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "run").mkdir()
    result = selfsup("train", "--resume", str(tmp_path / "run"))
    assert result.returncode == 2 and "error:" in result.stderr


@needs_shared_data
def test_the_published_simclr_cifar10_recipe_trains_on_the_full_jpeg_pack(tmp_path):
    result = selfsup("train", str(RECIPES / "simclr-cifar10.yaml"), "encoder.width=4", "trainer.batch_size=32",
                     "trainer.num_workers=0", "schedule.max_steps=2", "eval.evaluators=[{name: knn, k: 20}]",
                     "eval.train_data={limit: 500}", "eval.test_data={limit: 200}", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "training simclr-cifar10 for 2 steps" in result.stderr and "knn_top1" in result.stderr


def test_an_encoder_with_a_native_format_is_also_saved_in_it(tmp_path, plugins):
    from selfsup_image.encoders import ResNet18
    from toolkit.export import export_encoder, read_metadata

    class TorchvisionResNet(ResNet18):
        native_format = "torchvision"

        def save_native(self, directory: Path) -> None:
            directory.mkdir(parents=True)
            torch.save(self.net.state_dict(), directory / "resnet.pth")

    encoder = TorchvisionResNet(stem="cifar", width=4).eval()
    export_encoder(encoder, {"name": "resnet18", "stem": "cifar", "width": 4}, {"name": "simclr", "size": 16},
                   tmp_path / "out", plugins)
    assert read_metadata(tmp_path / "out")["native"] == "torchvision"
    native = torch.load(tmp_path / "out" / "torchvision" / "resnet.pth", weights_only=True)
    assert all(torch.equal(native[k], v) for k, v in encoder.net.state_dict().items())
