"""The video plugin through the engine and the `selfsup` command: recipes validate, a killed run
resumes exactly, two processes give the global batch's loss and gradients, frame and clip
encoders train on data the tests write, and the tiny recipe runs end to end (on DAVIS where
``../shared`` is present)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup_video.objectives import TemporalContrast
from selfsup_video.videoio import write_video
from toolkit import load_encoder, load_eval_transform
from toolkit.cli import main
from toolkit.engine import Trainer
from toolkit.interfaces import Batch
from toolkit.projectors import IdentityProjector
from toolkit.recipe import load_and_resolve

from conftest import RECIPES, needs_shared_data
from helpers import assert_same_state, kill_at
from test_video_plugin import LinearEncoder, write_frame_arrays

TINY = RECIPES / "tiny" / "temporal.yaml"
QUIET = ["eval.evaluators=[]", "trainer.log_every=100"]


def trainer(plugins, run_dir: Path, *overrides: str) -> Trainer:
    recipe = load_and_resolve(TINY, [*QUIET, *overrides], plugins)
    return Trainer.from_recipe(recipe, plugins, run_dir, log=open("/dev/null", "w"))


def video_folder(root: Path, videos: int = 8, frames: int = 20) -> Path:
    """``videos`` mp4 files of ``frames`` 24x32 frames: the frame arrays of the plugin tests, encoded."""
    arrays = np.load(write_frame_arrays(root / "frames.npz", [frames] * videos, height=24, width=32))["frames"]
    folder = root / "videos"
    folder.mkdir()
    for v in range(videos):
        write_video(folder / f"video{v}.mp4", arrays[v * frames:(v + 1) * frames], fps=24)
    return folder


@pytest.mark.parametrize("name", ["temporal-davis.yaml", "temporal-clips.yaml", "tiny/temporal.yaml"])
def test_video_recipes_validate(name, plugins):
    assert load_and_resolve(RECIPES / name, [], plugins).block("objective")["name"] == "temporal-contrast"


@pytest.mark.parametrize("tcn", [[], ["augmentation.tcn_margin=10", "objective.tcn_weight=0.5"]],
                         ids=["temporal", "with-tcn"])
def test_a_killed_temporal_run_resumes_exactly(plugins, tmp_path, tcn):
    data = f"data.path={write_frame_arrays(tmp_path / 'videos.npz', [24] * 8)}"
    overrides = [data, "schedule.max_steps=6", "trainer.checkpoint_every=3", *tcn]
    straight = trainer(plugins, tmp_path / "straight", *overrides)
    straight.fit()
    kill_at(5, trainer(plugins, tmp_path / "killed", *overrides), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=open("/dev/null", "w"))
    assert resumed.step == 3
    resumed.fit()
    assert straight.step == resumed.step == 6
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())


def loss_and_gradients(views: list[torch.Tensor], tcn_weight: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The temporal-contrast loss of this process's share of ``views`` and the encoder's gradients,
    averaged over processes as DDP averages them."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    torch.manual_seed(0)
    encoder = LinearEncoder()
    share = [v.chunk(world)[rank] for v in views]
    batch = Batch(views=share, index=torch.arange(len(share[0])))
    loss = TemporalContrast(0.2, tcn_weight)(batch, encoder, IdentityProjector(input_dim=5)).loss
    loss.backward()
    gradients = [p.grad for p in encoder.parameters()]
    if world > 1:
        for gradient in gradients:
            dist.all_reduce(gradient)
            gradient /= world
    return loss.detach(), gradients


def two_process_worker(rank: int, init_file: str, views: list[torch.Tensor], tcn_weight: float, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = loss_and_gradients(views, tcn_weight)
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("tcn_weight", [0.0, 0.5])
def test_two_processes_give_the_loss_and_gradients_of_the_global_batch(tmp_path, tcn_weight):
    views = [torch.randn(8, 12, generator=torch.Generator().manual_seed(v)) for v in range(3 if tcn_weight else 2)]
    mp.spawn(two_process_worker, args=(str(tmp_path / "init"), views, tcn_weight, str(tmp_path / "out.pt")), nprocs=2)
    two_loss, two_gradients = torch.load(tmp_path / "out.pt")
    one_loss, one_gradients = loss_and_gradients(views, tcn_weight)
    assert torch.allclose(one_loss, two_loss, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(one_gradients, two_gradients))


def test_a_clip_encoder_trains_on_video_files_and_is_evaluated_on_clips(plugins, tmp_path):
    folder = video_folder(tmp_path)
    run = trainer(plugins, tmp_path / "run", f"data={{name: video-files, path: {folder}, split: train}}",
                  "encoder={name: r2plus1d-18, width: 4}", "augmentation.clip_length=4", "augmentation.frames.size=16",
                  "augmentation.max_interval=6", "schedule.max_steps=2",
                  "eval.train_data={unit: clip, clip_length: 4, frame_stride: 4}",
                  "eval.test_data={unit: clip, clip_length: 4}",
                  "eval.evaluators=[{name: video-retrieval, exclude_window: 3}, {name: knn, k: 5}]")
    metrics = run.fit()
    assert run.step == 2
    assert 0 <= metrics["retrieval_top1"] <= 1 and 0 < metrics["retrieval_map"] <= 1 and "knn_top1" in metrics


def test_selfsup_command_trains_on_a_video_folder_and_the_export_embeds_frames(tmp_path):
    folder = video_folder(tmp_path)
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "toolkit", "train", str(TINY),
                             f"data={{name: video-files, path: {folder}, split: train}}", "eval.at_start=true",
                             "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "retrieval_top1" in result.stderr and "retrieval_map" in result.stderr and "knn_top1" in result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records][0] == "eval_start" and records[-1]["kind"] == "eval"
    encoder, transform = load_encoder(run_dir / "encoder"), load_eval_transform(run_dir / "encoder")
    with torch.no_grad():
        features = encoder(torch.stack([transform(torch.zeros(3, 24, 32, dtype=torch.uint8))] * 2))
    assert features.shape == (2, encoder.output_dim) and torch.isfinite(features).all()


@needs_shared_data
def test_the_tiny_recipe_trains_on_davis_and_reports_retrieval_and_knn(tmp_path):
    assert main(["train", str(TINY), "--run-dir", str(tmp_path / "run")]) == 0
    final = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["kind"] == "eval" and final["step"] == 8
    assert {"retrieval_top1", "retrieval_map", "knn_top1"} <= final.keys()
