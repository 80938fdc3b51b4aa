"""Training from packed shards: the same items per epoch as the source they were packed from (and,
packed in order and shuffled whole, the very same run), exact resume of a run that reads shards in
blocks, and unreadable samples skipped only when asked."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from selfsup_shards.tars import scan
from toolkit.data import epoch_loader
from toolkit.engine import Trainer
from toolkit.errors import DataError
from toolkit.plugins import default_plugins
from toolkit.shards import pack

from helpers import QUIET, assert_same_state, kill_at, make_trainer

FAST = ["eval.evaluators=[]", "trainer.num_workers=0"]


@pytest.fixture(scope="module")
def tiny_recipe_path() -> Path:
    from conftest import RECIPES

    return RECIPES / "tiny.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tiny_recipe_path) -> Path:
    """The tiny recipe's data (256 CIFAR-10 training and 256 test images) packed in shards of 50."""
    out = tmp_path_factory.mktemp("shards")
    pack(str(tiny_recipe_path), out, default_plugins(), splits=["train", "test"], shard_size=50, log=QUIET)
    return out


@pytest.fixture(scope="module")
def in_order(tmp_path_factory, tiny_recipe_path) -> Path:
    """The tiny recipe's training and evaluation data packed in their own order (``--no-shuffle``)."""
    out = tmp_path_factory.mktemp("in_order")
    pack(str(tiny_recipe_path), out, default_plugins(), splits=["train"], shard_size=50, shuffle=False, log=QUIET)
    pack(str(tiny_recipe_path), out, default_plugins(), ["data.limit=128"], splits=["test"], shard_size=50,
         shuffle=False, log=QUIET)
    return out


def from_shards(path: Path, **settings: str) -> str:
    extra = "".join(f", {key}: {value}" for key, value in settings.items())
    return f"data={{name: webdataset, path: {path}, split: train{extra}}}"


def epoch_items(trainer: Trainer) -> Counter:
    """The source items (by their index in the packed source) the first epoch trains on."""
    seen = Counter()
    for batch in epoch_loader(trainer.batches, 0, 0, 0, False):
        for index in batch.index.tolist():
            item_id = trainer.source.item_id(index)
            seen[int(item_id.split(":")[1]) if ":" in item_id else index] += 1
    return seen


def test_packed_shards_train_on_the_same_items_per_epoch_as_their_source(tiny_recipe_path, plugins, tmp_path, shards):
    original = make_trainer(tiny_recipe_path, plugins, tmp_path / "npz", *FAST)
    packed = make_trainer(tiny_recipe_path, plugins, tmp_path / "shards", *FAST,
                          from_shards(shards / "train", shuffle_buffer=60))
    assert epoch_items(packed) == epoch_items(original)
    for index in range(0, 256, 51):
        key = int(packed.source.item_id(index).split(":")[1])
        assert torch.equal(packed.source[index], original.source[key])
        assert packed.source.labels[index] == original.source.labels[key]


def test_shards_packed_in_order_and_shuffled_whole_train_exactly_as_their_source(tiny_recipe_path, plugins,
                                                                                  tmp_path, in_order):
    evaluate = ["eval.evaluators=[{name: knn, k: 20}]", "trainer.num_workers=0"]
    original = make_trainer(tiny_recipe_path, plugins, tmp_path / "npz", *evaluate)
    packed = make_trainer(tiny_recipe_path, plugins, tmp_path / "shards", *evaluate, from_shards(in_order))
    assert packed.fit() == original.fit()
    assert_same_state(original.model.state_dict(), packed.model.state_dict())


def test_a_killed_run_on_shards_resumes_on_the_same_next_sample(tiny_recipe_path, plugins, tmp_path, shards):
    settings = [*FAST, from_shards(shards, shuffle_buffer=60), "trainer.checkpoint_every=3"]
    straight = make_trainer(tiny_recipe_path, plugins, tmp_path / "straight", *settings)
    straight.fit()
    kill_at(5, make_trainer(tiny_recipe_path, plugins, tmp_path / "killed", *settings), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=QUIET)
    assert (resumed.epoch, resumed.step_in_epoch) == (0, 3), "the checkpoint holds the stream position"
    resumed.fit()
    assert resumed.step == straight.step == 8
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())


@pytest.fixture
def one_corrupt(tmp_path, shards) -> tuple[Path, str]:
    """A copy of the shards whose first training sample of the first shard holds a broken PNG."""
    copy = tmp_path / "corrupt"
    shutil.copytree(shards, copy)
    shard = copy / "train" / "shard-000000.tar"
    key, fields = scan(shard)[0]
    offset, size = fields["png"]
    data = bytearray(shard.read_bytes())
    data[offset + 20:offset + size] = bytes(size - 20)  # the header survives, the image data does not
    shard.write_bytes(bytes(data))
    return copy, key


def test_a_corrupt_sample_stops_training_with_its_shard_and_key(tiny_recipe_path, plugins, tmp_path, one_corrupt):
    corrupt, key = one_corrupt
    trainer = make_trainer(tiny_recipe_path, plugins, tmp_path / "run", *FAST, from_shards(corrupt))
    with pytest.raises(DataError, match=f"shard-000000.tar: sample '{key}'.*data.on_error: skip"):
        trainer.fit()


def test_with_on_error_skip_a_corrupt_sample_is_replaced_reported_and_counted(tiny_recipe_path, plugins, tmp_path,
                                                                              one_corrupt, capsys):
    corrupt, key = one_corrupt
    run = tmp_path / "run"
    resolved = make_trainer(tiny_recipe_path, plugins, run, "eval.evaluators=[{name: knn, k: 20}]",
                            "trainer.num_workers=0", from_shards(corrupt, on_error="skip"))
    resolved.log = log = (tmp_path / "log.txt").open("w")
    resolved.fit()
    log.close()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("data_errors", 0) for r in records if r["kind"] == "train") == 2, "once in each of 2 epochs"
    reports = [line for line in (tmp_path / "log.txt").read_text().splitlines() if line.startswith("data: skipped")]
    assert len(reports) >= 2 and all(f"shard-000000.tar: sample '{key}'" in line for line in reports)
    assert "knn_top1" in records[-1], "evaluation leaves the unreadable sample out instead of stopping"
