"""Users' own data layouts: no evaluation on training items, unlabelled data welcome.

A layout without a test split of its own (a flat folder, one file) is one list of items; its
``train`` and ``test`` splits are a seeded held-out split of that list, and a run says so.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from toolkit.api import trainer_for
from toolkit.data import NoTestSplit, holdout_split
from toolkit.engine import Trainer
from toolkit.recipe import load_and_resolve

from selfsup_image.datasources import ImageFolder, ImageNpz
from selfsup_sequence.datasources import AudioFolder, ucr_npz, ucr_ts
from selfsup_sequence.series import series_file

from helpers import write_wav

TINY_IMAGE_RECIPE = """
name: flat-folder
data: {{name: image-folder, path: {path}}}
augmentation: {{name: simclr, size: 16}}
encoder: {{name: resnet18, stem: cifar, width: 4}}
projector: {{name: mlp, hidden_dim: 32, output_dim: 16}}
objective: {{name: nt-xent}}
schedule: {{epochs: 1, max_steps: 2}}
trainer: {{batch_size: 8, device: cpu}}
eval: {{evaluators: [{{name: knn, k: 5}}, {{name: linear-probe, max_iter: 5}}]{extra}}}
"""


def photos(root: Path, classes: int = 2, per_class: int = 10, class_folders: bool = True) -> Path:
    """``root/<class>/<i>.png`` (or ``root/<i>.png``) small images whose colour is the class."""
    for c in range(classes):
        folder = root / f"class{c}" if class_folders else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), (40 + 100 * c, i * 10, 0)).save(folder / f"{c}_{i}.png")
    return root


def train(tmp_path: Path, recipe_text: str, *overrides: str) -> tuple[str, Path]:
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(recipe_text)
    log = io.StringIO()
    trainer = Trainer.from_recipe(load_and_resolve(recipe_path, overrides, _plugins()), _plugins(),
                                  tmp_path / "run", log=log)
    trainer.fit()
    trainer.close()
    return log.getvalue(), tmp_path / "run"


def _plugins():
    from toolkit.plugins import default_plugins

    return default_plugins()


def test_holdout_split_is_disjoint_seeded_and_stratified():
    labels = torch.tensor([0] * 30 + [1] * 10)
    train_ids, note = holdout_split(40, "train", 0.1, labels)
    test_ids, _ = holdout_split(40, "test", 0.1, labels)
    assert set(train_ids.tolist()).isdisjoint(test_ids.tolist()) and len(train_ids) + len(test_ids) == 40
    assert labels[test_ids].tolist().count(0) == 3 and labels[test_ids].tolist().count(1) == 1
    assert torch.equal(test_ids, holdout_split(40, "test", 0.1, labels)[0])
    assert "held-out 0.1" in note and "4 of 40" in note


def test_a_flat_image_folder_never_evaluates_on_its_training_images(tmp_path):
    root = photos(tmp_path / "photos")
    train_files = set(ImageFolder(root, split="train").files)
    test_files = set(ImageFolder(root, split="test").files)
    assert train_files.isdisjoint(test_files) and len(test_files) == 2 and len(train_files) == 18


def test_an_npz_without_a_test_array_holds_out_its_test_split(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.arange(20, dtype=np.uint8).repeat(16).reshape(20, 4, 4), y=np.arange(20) % 2)
    train = ImageNpz(tmp_path / "a.npz", split="train")
    test = ImageNpz(tmp_path / "a.npz", split="test")
    seen = {int(train[i][0, 0, 0]) for i in range(len(train))}
    assert seen.isdisjoint(int(test[i][0, 0, 0]) for i in range(len(test))) and len(test) == 2


def test_a_flat_audio_folder_never_evaluates_on_its_training_files(tmp_path):
    for c in ("yes", "no"):
        for i in range(5):
            write_wav(tmp_path / "speech" / c / f"{i}.wav", np.full(400, 1000 * i))
    train = AudioFolder(tmp_path / "speech", split="train", label="folder")
    test = AudioFolder(tmp_path / "speech", split="test", label="folder")
    assert set(train.files).isdisjoint(test.files) and len(test.files) == 2
    assert sorted(test.labels.tolist()) == [0, 1] and train.split_note.startswith("audio folder")


def test_no_holdout_means_no_test_split_rather_than_the_training_items(tmp_path):
    root = photos(tmp_path / "photos")
    assert len(ImageFolder(root, split="train", holdout_fraction=0.0)) == 20
    with pytest.raises(NoTestSplit, match="eval.holdout_fraction is 0"):
        ImageFolder(root, split="test", holdout_fraction=0.0)


def test_a_layout_with_split_folders_uses_them_whole(tmp_path):
    photos(tmp_path / "photos" / "train")
    photos(tmp_path / "photos" / "test", per_class=3)
    source = ImageFolder(tmp_path / "photos", split="test")
    assert len(source) == 6 and source.split_note is None


def test_a_flat_folder_run_says_where_its_evaluation_split_came_from(tmp_path):
    log, run_dir = train(tmp_path, TINY_IMAGE_RECIPE.format(path=photos(tmp_path / "photos"), extra=""))
    assert "has no test split: evaluating on a seeded held-out 0.1" in log
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["eval"]["holdout_fraction"] == 0.1
    assert "knn_top1" in log


def test_unlabelled_images_train_and_label_needing_evaluators_are_skipped(tmp_path):
    root = photos(tmp_path / "photos", class_folders=False)
    assert ImageFolder(root).labels is None
    log, run_dir = train(tmp_path, TINY_IMAGE_RECIPE.format(path=root, extra=""))
    skipped = [line for line in log.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and "knn needs labels" in skipped[0] and "linear-probe needs labels" in skipped[1]
    assert (run_dir / "encoder" / "model.safetensors").is_file()


def test_without_holdout_evaluation_says_there_is_no_test_split_and_skips(tmp_path):
    log, _ = train(tmp_path, TINY_IMAGE_RECIPE.format(path=photos(tmp_path / "photos"), extra=", holdout_fraction: 0"))
    assert "evaluators that need a test split are skipped" in log
    assert sum("skipped: " in line and "no test split" in line for line in log.splitlines()) == 2


def test_a_recipe_without_evaluators_trains_on_every_item_and_a_later_eval_says_so(tmp_path):
    recipe = TINY_IMAGE_RECIPE.format(path=photos(tmp_path / "photos"), extra="").replace(
        "evaluators: [{name: knn, k: 5}, {name: linear-probe, max_iter: 5}]", "evaluators: []")
    log, run_dir = train(tmp_path, recipe)
    assert "training on all 20 items" in log
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["kind"] == "train" for r in records)
    trainer = trainer_for(run_dir, (), _plugins(), trust_plugins=False)
    assert len(trainer.source) == 20  # every image trained
    output = io.StringIO()
    trainer.log = output
    assert trainer.evaluate(tag="eval_standalone") == {}
    assert sum("no test split" in line for line in output.getvalue().splitlines()) == 2


# time series

def test_a_csv_with_one_series_per_row_gives_labelled_series_and_a_held_out_test_split(tmp_path):
    path = tmp_path / "series.csv"
    rows = [f"{i},{'up' if i % 2 else 'down'}," + ",".join(str(i + t) for t in range(6)) for i in range(20)]
    path.write_text("id,label," + ",".join(f"t{t}" for t in range(6)) + "\n" + "\n".join(rows) + "\n")
    train = series_file(path, label_column="label", id_column="id")
    test = series_file(path, split="test", label_column="label", id_column="id")
    assert train[0].shape == (1, 6) and train.class_names == ["down", "up"] and len(test) == 2
    assert {float(train[i][0, 0]) for i in range(len(train))}.isdisjoint(float(test[i][0, 0]) for i in range(2))


def test_a_csv_with_time_as_rows_groups_channels_into_series_by_id(tmp_path):
    path = tmp_path / "sensors.csv"
    lines = ["id,ax,ay,activity"] + [f"{s},{s + t},{-t},{'walk' if s else 'run'}"
                                     for s in range(3) for t in range(4 + s)]
    path.write_text("\n".join(lines) + "\n")
    source = series_file(path, split="all", time="rows", id_column="id", label_column="activity")
    assert source.series.shape == (3, 2, 6) and torch.isnan(source[0][:, 4:]).all()
    assert source.labels.tolist() == [0, 1, 1] and source.class_names == ["run", "walk"]


def test_one_long_recording_is_cut_into_windows_labelled_by_their_most_frequent_label(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("x,state\n" + "".join(f"{t},{'a' if t < 5 else 'b'}\n" for t in range(12)))
    source = series_file(path, split="all", time="rows", label_column="state", segment_length=4)
    assert source.series.shape == (3, 1, 4) and source.labels.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="set data.segment_length"):
        series_file(path, time="rows", label_column="state")


def test_an_npy_with_channels_last_and_a_label_file(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(10, 50, 3)))
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    source = series_file(tmp_path / "x.npy", split="all", labels=tmp_path / "y.npy", channels_last=True)
    assert source[0].shape == (3, 50) and source.num_classes == 2
    assert series_file(tmp_path / "x.npy", channels_last=True).labels is None


def test_a_parquet_table_reads_like_a_csv(tmp_path):
    import pyarrow
    import pyarrow.parquet

    table = {"label": ["a", "b"] * 5, **{f"t{t}": [float(i + t) for i in range(10)] for t in range(8)}}
    pyarrow.parquet.write_table(pyarrow.table(table), tmp_path / "s.parquet")
    source = series_file(tmp_path / "s.parquet", split="all", label_column="label")
    assert source.series.shape == (10, 1, 8) and source.labels.tolist() == [0, 1] * 5


@pytest.mark.parametrize("name", ["x.npy", "x.csv"])
def test_ucr_npz_on_another_file_points_to_the_series_source(tmp_path, name):
    np.save(tmp_path / "x.npy", np.zeros((4, 8)))
    (tmp_path / "x.csv").write_text("t0,t1\n1,2\n")
    with pytest.raises(ValueError, match=r"data: \{name: series"):
        ucr_npz(tmp_path / name)


def test_an_unlabelled_ucr_npz_trains_without_y(tmp_path):
    np.savez(tmp_path / "u.npz", x_train=np.zeros((10, 2, 30), np.float32))
    source = ucr_npz(tmp_path / "u.npz")
    assert source.labels is None and len(source) == 9 and source[0].shape == (2, 30)


def test_an_unlabelled_ts_file_reads(tmp_path):
    (tmp_path / "u.ts").write_text("@classLabel false\n@data\n1,2,3:4,5,6\n1,2:3,4\n")
    source = ucr_ts(tmp_path / "u.ts", split="all")
    assert source.labels is None and source.series.shape == (2, 2, 3)


def test_cpc_trains_on_a_csv_of_series_and_probes_its_held_out_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"{c}," + ",".join(f"{v:.4f}" for v in np.sin(np.arange(64) * (0.2 + 0.4 * c)) + rng.normal(0, .1, 64))
            for c in (0, 1) for _ in range(20)]
    (tmp_path / "waves.csv").write_text("label," + ",".join(f"t{t}" for t in range(64)) + "\n" + "\n".join(rows))
    recipe = f"""
data: {{name: series, path: {tmp_path / 'waves.csv'}, label_column: label}}
augmentation: {{name: cpc-series, window: 48}}
encoder: {{name: cpc-series, channels: 8, hidden_dim: 8}}
objective: {{name: cpc, prediction_steps: 2, num_negatives: 4}}
schedule: {{epochs: 1, max_steps: 2}}
trainer: {{batch_size: 8, device: cpu}}
eval: {{evaluators: [{{name: knn, k: 3}}]}}
"""
    log, _ = train(tmp_path, recipe)
    assert "series file" in log and "4 of 40 items" in log and "knn_top1" in log
