"""Video (temporal contrast): same-video retrieval and kNN of learned features against a random-init
encoder and raw pixels, training throughput, and PyAV decoding speed.

One run of a temporal-contrast recipe through the engine (default ``recipes/temporal-davis.yaml``),
then, on the recipe's evaluation splits (``eval.train_data`` / ``eval.test_data``, frame units):

- ``learned``: the trained encoder's features;
- ``random_init``: the same encoder before training (same seed, same weights as step 0);
- ``pixels``: the evaluation transform's pixels, average-pooled to ``--pixel-size`` squared, flattened.

Each is scored with the recipe's ``video-retrieval`` settings (top-1 and mAP on the test split)
and weighted cosine kNN over video ids (train frames as memory, test frames as queries; the
recipe's ``knn`` block, else k = 20).

Decoding: the source's videos are written as mp4 files (libx264, yuv420p, CRF 18) into a
temporary folder, at their stored size and upscaled ``--upscale`` times, each with x264's default
keyframe interval (250: one keyframe per DAVIS video) and with a keyframe every 12 frames. Measured
through :class:`selfsup_video.videos.VideoFile`: sequential decoding of every frame, random access
to single frames, and the temporal augmentation's access pattern (the frames of two views);
plus reading the same random frames from the frame array.

    python benchmarks/video_retrieval.py                                 # DAVIS, the recipe's schedule
    python benchmarks/video_retrieval.py --set schedule.epochs=100       # recipe overrides
    python benchmarks/video_retrieval.py --skip-training                 # decoding only

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup_video.datasources import VideoSource
from selfsup_video.retrieval import same_video_retrieval
from selfsup_video.videoio import probe, write_video
from selfsup_video.videos import VideoFile
from toolkit.engine import Trainer
from toolkit.evaluation import FeatureContext, knn_scores
from toolkit.plugins import default_plugins
from toolkit.recipe import build, load_and_resolve

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, nargs="?", default=ROOT / "recipes" / "temporal-davis.yaml")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="recipe overrides key=value")
    parser.add_argument("--pixel-size", type=int, default=16, help="side of the pooled pixel baseline")
    parser.add_argument("--upscale", type=int, default=4, help="second decoding resolution, x the stored size")
    parser.add_argument("--accesses", type=int, default=300, help="random frame reads per decoding measurement")
    parser.add_argument("--skip-training", action="store_true", help="only measure decoding")
    args = parser.parse_args()
    plugins = default_plugins()
    recipe = load_and_resolve(args.recipe, ["eval.evaluators=[]", *args.overrides], plugins)
    evaluators = {block["name"]: block for block in load_and_resolve(args.recipe, args.overrides, plugins)
                  .block("eval")["evaluators"]}
    report: dict[str, Any] = {"recipe": recipe.name, "overrides": args.overrides}
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer.from_recipe(recipe, plugins, Path(out) / "run", log=open("/dev/null", "w"))
        if not args.skip_training:
            report.update(_quality(trainer, Path(out), evaluators, args.pixel_size))
        report["decoding"] = _decoding(trainer.source, Path(out), args.upscale, args.accesses, trainer.augmentation)
    print(json.dumps(report, indent=2))


def _quality(trainer: Trainer, out: Path, evaluators: dict[str, dict[str, Any]], pixel_size: int) -> dict[str, Any]:
    sources = {role: build(trainer.plugins, "datasource", {**trainer.recipe.block("data"),
                                                           **getattr(trainer.eval_config, f"{role}_data")})
               for role in ("train", "test")}
    features = {"random_init": _embed(trainer, sources)}
    started = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - started
    features["learned"] = _embed(trainer, sources)
    features["pixels"] = _pixels(trainer, sources, pixel_size)
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and "samples_per_s" in r]
    speed = statistics.median([r["samples_per_s"] for r in train[1:]] or [r["samples_per_s"] for r in train])
    views = trainer.augmentation.n_views * (trainer.augmentation.clip_length or 1)
    window = evaluators.get("video-retrieval", {}).get("exclude_window", 5)
    k = evaluators.get("knn", {}).get("k", 20)
    temperature = evaluators.get("knn", {}).get("temperature", 0.07)
    scores = {}
    for name, feats in features.items():
        test = sources["test"]
        top1, average_precision, queries = same_video_retrieval(feats["test"], test.video_ids, test.frame_times, window)
        knn = knn_scores(feats["train"], sources["train"].labels, feats["test"], k, temperature)
        scores[name] = {"retrieval_top1": round(top1, 4), "retrieval_map": round(average_precision, 4),
                        "knn_top1": round((knn.argmax(dim=1) == test.labels).float().mean().item(), 4)}
    return {
        "steps": trainer.total_steps,
        "train_wall_s": round(wall, 1),
        "train_videos_per_s_median": round(speed, 1),
        "train_frames_per_s_median": round(speed * views, 1),
        "final_contrastive_acc": round(train[-1].get("contrastive_acc", float("nan")), 4),
        "eval_frames": {role: len(source) for role, source in sources.items()},
        "retrieval_queries": queries,
        "exclude_window": window,
        "knn": {"k": k, "temperature": temperature},
        "scores": scores,
    }


def _embed(trainer: Trainer, sources: dict[str, VideoSource]) -> dict[str, Tensor]:
    context = FeatureContext(trainer.encoder, trainer.augmentation, {r: (lambda s=s: s) for r, s in sources.items()},
                             trainer.device, trainer.eval_config.batch_size)
    return {role: context.features(role)[0] for role in sources}


def _pixels(trainer: Trainer, sources: dict[str, VideoSource], size: int) -> dict[str, Tensor]:
    pooled = {}
    for role, source in sources.items():
        views = torch.stack([trainer.augmentation.eval_transform(source[i]) for i in range(len(source))])
        pooled[role] = F.adaptive_avg_pool2d(views, size).flatten(1)
    return pooled


def _decoding(source: VideoSource, out: Path, upscale: int, accesses: int, augmentation: Any) -> dict[str, Any]:
    """Frames/s of PyAV decoding (sequential, random access, two-view access) and of frame arrays."""
    generator = np.random.default_rng(0)
    videos = [v.window(0, v.total_frames) for v in source.videos]  # whole videos, not the training split
    array_frames = [v.frames(range(v.num_frames)).permute(0, 2, 3, 1).numpy() for v in videos]
    picks = [(int(v), int(generator.integers(videos[v].num_frames))) for v in generator.integers(len(videos),
                                                                                                  size=accesses)]
    started = time.perf_counter()
    for v, t in picks:
        videos[v].frames([t])
    results: dict[str, Any] = {"frame_arrays_random_frames_per_s": round(accesses / (time.perf_counter() - started))}
    for scale in (1, upscale):
        for gop in (None, 12):
            folder = out / f"videos_x{scale}_g{gop or 'default'}"
            folder.mkdir()
            options = {"crf": "18", **({"g": str(gop)} if gop else {})}
            for i, frames in enumerate(array_frames):
                if scale > 1:
                    frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
                write_video(folder / f"{i:03d}.mp4", frames, videos[i].fps, options=options)
            handles = [VideoFile(probe(f)) for f in sorted(folder.glob("*.mp4"))]
            height, width = handles[0].index.height, handles[0].index.width
            started = time.perf_counter()
            decoded = sum(len(h.frames(range(h.num_frames))) for h in handles)
            sequential = decoded / (time.perf_counter() - started)
            started = time.perf_counter()
            for v, t in picks:
                handles[v].frames([t])
            random_access = accesses / (time.perf_counter() - started)
            torch.manual_seed(0)
            started = time.perf_counter()
            for v, _ in picks:
                first, second = augmentation.sampler.sample(handles[v].num_frames)
                handles[v].frames([first, second])
            pairs = 2 * accesses / (time.perf_counter() - started)
            results[f"mp4_{height}x{width}_gop_{gop or 'default'}"] = {
                "file_mb": round(sum(f.stat().st_size for f in folder.glob("*.mp4")) / 2**20, 2),
                "sequential_frames_per_s": round(sequential),
                "random_access_frames_per_s": round(random_access),
                "two_view_frames_per_s": round(pairs),
            }
    return results


if __name__ == "__main__":
    main()
