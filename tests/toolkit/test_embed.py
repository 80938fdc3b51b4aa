"""`selfsup embed`: files in, vectors out, through the data sources and the evaluation transform of the run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import toolkit
from toolkit.cli import main
from toolkit.evaluation import knn_scores

from conftest import RECIPES, ROOT
from helpers import QUIET, tiny_bert, write_wav

CIFAR = ROOT / "data" / "cifar10_mini_jpeg.npz"
ANIMALS = ["a dog runs in the park", "the cat sits on the mat", "a bird flies over the sea",
           "a horse eats the grass", "the dog sleeps at night", "a cat plays with a dog"]
SPORTS = ["two men are playing football", "the team won the match", "a girl plays tennis today",
          "the players run on the field", "a man is playing a guitar", "the match ends at night"]


def knn_top1(train: dict, test: dict, k: int, temperature: float) -> float:
    scores = knn_scores(torch.from_numpy(train["vectors"]), torch.from_numpy(train["labels"]),
                        torch.from_numpy(test["vectors"]), k, temperature)
    return (scores.argmax(dim=1) == torch.from_numpy(test["labels"])).float().mean().item()  # as the evaluator


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> toolkit.Run:
    """The tiny SimCLR recipe (256 training and 128 test images of the bundled subset), kNN with k = 20."""
    run_dir = tmp_path_factory.mktemp("embed") / "image-run"
    return toolkit.train(RECIPES / "tiny.yaml", ["eval.evaluators=[{name: knn, k: 20}]"], run_dir, log=QUIET)


def test_embedding_the_cifar_subset_gives_the_runs_own_knn_accuracy(image_run, tmp_path):
    for split, limit in (("train", 256), ("test", 128)):
        assert main(["embed", str(image_run.run_dir), str(CIFAR), "--split", split, "--data", f"limit={limit}",
                     "--out", str(tmp_path / f"{split}.npz")]) == 0
    train, test = (dict(np.load(tmp_path / f"{split}.npz")) for split in ("train", "test"))
    assert train["vectors"].shape == (256, 32) and test["ids"].tolist()[:2] == ["0", "1"]
    assert knn_top1(train, test, k=20, temperature=0.07) == image_run.metrics["knn_top1"]


def test_an_input_with_splits_needs_split_and_an_unknown_format_is_refused(image_run, tmp_path, capsys):
    assert main(["embed", str(image_run.run_dir), str(CIFAR), "--out", str(tmp_path / "x.npz")]) == 2
    assert "holds the splits test, train; choose one with --split" in capsys.readouterr().err
    assert main(["embed", str(image_run.run_dir), str(CIFAR), "--split", "test", "--out", str(tmp_path / "x.csv")]) == 2
    assert "write .npy, .npz, .parquet" in capsys.readouterr().err


def image_folder(root: Path, broken: bool) -> Path:
    """``root/<class>/<i>.png``: two classes of three 20x20 images, and a damaged ``bird/broken.jpg``."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if broken:
        (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_a_damaged_file_stops_the_embedding_with_its_name(image_run, tmp_path, capsys):
    photos = image_folder(tmp_path / "photos", broken=True)
    assert main(["embed", str(image_run.run_dir), str(photos), "--out", str(tmp_path / "x.npz")]) == 2
    error = capsys.readouterr().err
    assert "broken.jpg" in error and "--skip-bad" in error and not (tmp_path / "x.npz").exists()


def test_skip_bad_leaves_out_and_names_damaged_files_and_keeps_folder_labels(image_run, tmp_path, capsys):
    photos = image_folder(tmp_path / "photos", broken=True)
    out = tmp_path / "photos.parquet"
    assert main(["embed", str(image_run.run_dir / "encoder"), str(photos), "--out", str(out), "--skip-bad"]) == 0
    assert "skipped dog/broken.jpg" in capsys.readouterr().err
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(out).to_pydict()
    assert table["id"] == ["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png", "dog/2.png"]
    assert table["label"] == [0, 0, 0, 1, 1, 1] and len(table["vector"][0]) == 32


def test_the_vectors_are_the_encoders_own_through_the_api(image_run, tmp_path):
    photos = image_folder(tmp_path / "photos", broken=False)
    embeddings = toolkit.embed(image_run.run_dir, photos, out=tmp_path / "photos.npy", log=QUIET)
    encoder, transform = image_run.load_encoder(), toolkit.load_eval_transform(image_run.encoder_path)
    with torch.no_grad():
        direct = encoder(transform(photos / "dog" / "2.png")[None])
    assert torch.allclose(torch.from_numpy(embeddings.vectors[-1]), direct[0], atol=1e-5)
    assert np.array_equal(np.load(tmp_path / "photos.npy"), embeddings.vectors)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[toolkit.Run, Path]:
    """SimCSE with a tiny random BERT on a labelled CSV (two topics), kNN on a second CSV."""
    folder = tmp_path_factory.mktemp("text")
    model = tiny_bert(folder / "bert", ANIMALS + SPORTS)
    for name, rows in (("train", range(0, 12)), ("test", range(12))):
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "topic"])
            for i in rows:
                sentence = (ANIMALS + SPORTS)[i] if name == "train" else (ANIMALS + SPORTS)[(i + 5) % 12]
                writer.writerow([sentence, "animals" if sentence in ANIMALS else "sports"])
    (folder / "sentences.txt").write_text("\n".join(ANIMALS[:3]) + "\n\n" + SPORTS[0] + "\n", encoding="utf-8")
    run = toolkit.train(RECIPES / "simcse-tiny.yaml", [
        f"encoder.model={model}", "encoder.pretrained=true", "encoder.config=null", "trainer.batch_size=4",
        f"data={{name: text, path: {folder / 'train.csv'}, columns: [text], label_column: topic}}",
        f"eval.test_data={{path: {folder / 'test.csv'}}}", "eval.evaluators=[{name: knn, k: 5}]",
        "eval.select_best=null", "eval.at_start=false"], folder / "run", log=QUIET)
    return run, folder


def test_embedding_a_labelled_csv_column_gives_the_runs_own_knn_accuracy(text_run, tmp_path):
    run, folder = text_run
    for split in ("train", "test"):
        assert main(["embed", str(run.run_dir), str(folder / f"{split}.csv"), "--column", "text",
                     "--data", "label_column=topic", "--out", str(tmp_path / f"{split}.npz")]) == 0
    train, test = (dict(np.load(tmp_path / f"{split}.npz")) for split in ("train", "test"))
    assert train["ids"].tolist()[:2] == ["row 1", "row 2"] and train["labels"].tolist()[:7] == [0] * 6 + [1]
    assert knn_top1(train, test, k=5, temperature=0.07) == run.metrics["knn_top1"]


def test_a_text_file_gives_one_vector_per_line_as_the_same_sentences_in_a_table(text_run, tmp_path):
    run, folder = text_run
    lines = toolkit.embed(run.run_dir, folder / "sentences.txt", log=QUIET)
    table = toolkit.embed(run.run_dir, folder / "train.csv", column="text", log=QUIET)
    assert lines.ids == ["line 1", "line 2", "line 3", "line 5"] and lines.labels is None
    assert np.allclose(lines.vectors[:3], table.vectors[:3], atol=1e-6)
    assert np.allclose(lines.vectors[3], table.vectors[6], atol=1e-6)


@pytest.fixture(scope="module")
def series_run(tmp_path_factory) -> tuple[toolkit.Run, Path]:
    """CPC on 48 random two-class series, from a recipe given as a dict; two steps, no evaluation."""
    folder = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(0)
    np.save(folder / "series.npy", rng.normal(size=(48, 1, 64)).astype(np.float32))
    np.save(folder / "labels.npy", np.arange(48) % 2)
    recipe = {"name": "tiny-series",
              "data": {"name": "series", "path": str(folder / "series.npy"), "labels": str(folder / "labels.npy")},
              "augmentation": {"name": "cpc-series", "window": 32},
              "encoder": {"name": "cpc-series", "channels": 8, "hidden_dim": 8},
              "objective": {"name": "cpc", "prediction_steps": 2, "num_negatives": 4},
              "optimizer": {"name": "adamw", "lr": 1e-3},
              "schedule": {"epochs": 1, "max_steps": 2}, "trainer": {"batch_size": 8}}
    return toolkit.train(recipe, run_dir=folder / "run", log=QUIET), folder


def test_a_folder_of_audio_files_and_an_npy_of_series_embed_with_a_sequence_encoder(series_run, tmp_path):
    run, folder = series_run
    rng = np.random.default_rng(1)
    for name in ("yes/a.wav", "yes/b.wav", "no/c.wav"):
        write_wav(tmp_path / "audio" / name, rng.uniform(-0.5, 0.5, 400) * 32767)
    audio = toolkit.embed(run.run_dir, tmp_path / "audio", out=tmp_path / "audio.npz", log=QUIET)
    assert audio.ids == ["no/c.wav", "yes/a.wav", "yes/b.wav"] and audio.labels.tolist() == [0, 1, 1]
    assert audio.vectors.shape == (3, 32) and np.isfinite(audio.vectors).all()  # mean+std of [z, c]: 2 (8 + 8)
    series = toolkit.embed(run.run_dir, folder / "series.npy", log=QUIET)
    assert series.vectors.shape == (48, 32) and series.ids[-1] == "47" and series.labels is None


def test_series_the_encoder_cannot_take_stop_the_embedding_without_the_skip_bad_hint(series_run, tmp_path, capsys):
    np.save(tmp_path / "three.npy", np.zeros((4, 3, 64), dtype=np.float32))  # the encoder takes 1 channel
    out = tmp_path / "x.npy"
    assert main(["embed", str(series_run[0].run_dir), str(tmp_path / "three.npy"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "in_channels" in error and "--skip-bad" not in error


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> tuple[toolkit.Run, Path]:
    """Temporal contrast on 4 random 8-frame videos (a frame-array npz); two steps, no evaluation."""
    folder = tmp_path_factory.mktemp("video")
    frames = np.random.default_rng(0).integers(0, 255, (32, 24, 24, 3), dtype=np.uint8)
    np.savez(folder / "videos.npz", frames=frames, offsets=np.arange(0, 33, 8))
    run = toolkit.train(RECIPES / "tiny" / "temporal.yaml", [
        f"data.path={folder / 'videos.npz'}", "data.limit=null", "eval.evaluators=[]", "schedule.max_steps=2",
        "augmentation.max_interval=2"], folder / "run", log=QUIET)
    return run, folder


def test_folders_of_frames_embed_one_vector_per_video(video_run, tmp_path):
    run, _ = video_run
    rng = np.random.default_rng(2)
    for video in ("walk/v1", "walk/v2", "run/v3"):
        (tmp_path / "clips" / video).mkdir(parents=True)
        for t in range(3):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                tmp_path / "clips" / video / f"{t:03d}.png")
    embeddings = toolkit.embed(run.run_dir, tmp_path / "clips", log=QUIET)
    assert embeddings.ids == ["run/v3", "walk/v1", "walk/v2"] and embeddings.labels.tolist() == [0, 1, 1]
    assert embeddings.vectors.shape[0] == 3
