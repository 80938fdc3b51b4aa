"""The shards plugin: packing any source, reading tar shards and local Hugging Face datasets."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup_shards.huggingface import HFDataset
from selfsup_shards.tars import expand, scan
from selfsup_shards.webdataset import WebDataset
from toolkit.cli import main
from toolkit.data import BatchPlan, UnreadableItem, ViewBatches, epoch_loader
from toolkit.errors import DataError
from toolkit.interfaces import Augmentation, DataSource, stack_views
from toolkit.shards import INDEX, pack_source, read_index


class Items(DataSource):
    """``items`` with labels ``i % 3`` (class names ``c0 .. c2``) and an optional sample rate."""

    def __init__(self, items: list, sample_rate: int | None = None, labelled: bool = True) -> None:
        self.items, self.sample_rate = items, sample_rate
        self.labels = torch.arange(len(items)) % 3 if labelled else None
        self.num_classes = 3 if labelled else None
        self.class_names = ["c0", "c1", "c2"] if labelled else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


class Identity(Augmentation):
    n_views = 1

    def __call__(self, item):
        return [item]

    def eval_transform(self, item):
        return item


def images(n: int = 10, channels: int = 3) -> Items:
    generator = torch.Generator().manual_seed(0)
    return Items([torch.randint(0, 256, (channels, 6, 5), generator=generator, dtype=torch.uint8) for _ in range(n)])


def audio(n: int = 7) -> Items:
    generator = torch.Generator().manual_seed(1)
    return Items([torch.randint(-32768, 32768, (1, 40 + i), generator=generator).float() / 32768 for i in range(n)],
                 sample_rate=8000)


def series(n: int = 8) -> Items:
    items = [torch.randn(2, 12) for _ in range(n)]
    items[0][:, 9:] = float("nan")  # padding of a shorter series
    return Items(items)


def text(n: int = 6) -> Items:
    return Items([(f"anchor {i}", f"positive {i} é") for i in range(n)], labelled=False)


def original_index(source: WebDataset, index: int) -> int:
    return int(source.item_id(index).split(":")[1])


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return a == b
    return a.shape == b.shape and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


@pytest.mark.parametrize("make, fields", [(images, ["png"]), (audio, ["flac"]), (series, ["npy"]),
                                          (text, ["0.txt", "1.txt"])])
def test_packed_items_read_back_exactly_with_their_labels(tmp_path, make, fields):
    original = make()
    index = pack_source(original, tmp_path, shard_size=3)
    assert index.counts == [3] * (len(original) // 3) + ([len(original) % 3] if len(original) % 3 else [])
    assert index.item == fields
    shards = WebDataset(tmp_path, split="all", input_spec={"sample_rate": original.sample_rate})
    assert len(shards) == len(original)
    for i in range(len(shards)):
        j = original_index(shards, i)
        assert same(shards[i], original[j])
        if original.labels is not None:
            assert shards.labels[i] == original.labels[j]
    assert shards.class_names == original.class_names and shards.num_classes == original.num_classes


def test_packing_shuffles_items_across_shards_and_keeps_their_keys(tmp_path):
    pack_source(images(30), tmp_path, shard_size=10)
    first = [key for key, _ in scan(tmp_path / "shard-000000.tar")]
    assert first != sorted(first) or first != [f"{i:08d}" for i in range(10)]
    assert sorted(k for s in range(3) for k, _ in scan(tmp_path / f"shard-{s:06d}.tar")) == [f"{i:08d}"
                                                                                             for i in range(30)]


def test_an_item_of_another_kind_stops_packing_without_leaving_a_partial_shard(tmp_path):
    mixed = Items([torch.zeros(3, 4, 4, dtype=torch.uint8)] * 3 + ["a string among images"])
    with pytest.raises(DataError, match="items of one kind"):
        pack_source(mixed, tmp_path, shard_size=10)
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.tar"))


def test_one_channel_images_stay_one_channel(tmp_path):
    original = images(4, channels=1)
    pack_source(original, tmp_path)
    shards = WebDataset(tmp_path, split="all")
    assert all(same(shards[i], original[original_index(shards, i)]) for i in range(4))


def test_brace_patterns_expand_ranges_and_choices():
    assert expand("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand("{train,val}-{0..1}.tar") == ["train-0.tar", "train-1.tar", "val-0.tar", "val-1.tar"]


@pytest.mark.parametrize("format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_scanning_headers_finds_what_tarfile_finds_long_names_included(tmp_path, format):
    path = tmp_path / "foreign.tar"
    deep = "d" * 60 + "/" + "e" * 50  # longer than ustar's 100-character name field
    with tarfile.open(path, "w", format=format) as tar:
        for name, size in [(f"{deep}/0001.jpg", 700), (f"{deep}/0001.cls", 1), ("0002.seg.png", 1025)]:
            member = tarfile.TarInfo(name)
            member.size = size
            tar.addfile(member, io.BytesIO(bytes(size)))
    with tarfile.open(path) as tar:
        expected = {m.name: (m.offset_data, m.size) for m in tar}
    samples = scan(path)
    assert [key for key, _ in samples] == [f"{deep}/0001", "0002"]
    assert samples[0][1] == {"jpg": expected[f"{deep}/0001.jpg"], "cls": expected[f"{deep}/0001.cls"]}
    assert samples[1][1] == {"seg.png": expected["0002.seg.png"]}


def write_foreign_shards(folder: Path, count: int = 2, per_shard: int = 4, corrupt: str | None = None) -> list[Path]:
    """Shards as another tool writes them (no index): ``<key>.jpg`` and ``<key>.cls``."""
    from torchvision.io import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(count):
        paths.append(folder / f"part-{s:02d}.tar")
        with tarfile.open(paths[-1], "w") as tar:
            for i in range(per_shard):
                key = f"s{s}_{i}"
                jpeg = encode_jpeg(torch.full((3, 8, 8), 40 * i, dtype=torch.uint8)).numpy().tobytes()
                fields = {"jpg": b"not a jpeg" if key == corrupt else jpeg, "cls": str(i % 2).encode()}
                for field, data in fields.items():
                    member = tarfile.TarInfo(f"{key}.{field}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    return paths


def test_shards_without_an_index_are_scanned_once_and_the_counts_and_labels_cached(tmp_path, monkeypatch):
    write_foreign_shards(tmp_path)
    shards = WebDataset(tmp_path / "part-{00..01}.tar", split="all")
    assert len(shards) == 8 and shards.labels.tolist() == [0, 1, 0, 1] * 2 and shards[5].shape == (3, 8, 8)
    assert len(list(tmp_path.glob(".selfsup-index-*.json"))) == 1
    monkeypatch.setattr("selfsup_shards.webdataset.scan", lambda path: pytest.fail("scanned again"))
    assert WebDataset(tmp_path / "part-{00..01}.tar", split="all").labels.tolist() == shards.labels.tolist()


def test_a_corrupt_sample_stops_the_run_naming_the_shard_and_key_unless_skipping_is_asked_for(tmp_path):
    write_foreign_shards(tmp_path, corrupt="s1_2")
    strict = WebDataset(tmp_path, split="all")
    bad = next(i for i in range(len(strict)) if strict.item_id(i) == "part-01.tar:s1_2")
    with pytest.raises(DataError, match=r"part-01.tar: sample 's1_2' \(jpg\).*data.on_error: skip") as raised:
        strict[bad]
    assert not isinstance(raised.value, UnreadableItem)
    with pytest.raises(UnreadableItem, match="part-01.tar: sample 's1_2'"):
        WebDataset(tmp_path, split="all", on_error="skip")[bad]


def test_a_truncated_shard_reports_the_sample_it_cuts(tmp_path):
    pack_source(audio(6), tmp_path, shard_size=3)
    last = tmp_path / "shard-000001.tar"
    samples = scan(last)
    key, fields = samples[-1]
    offset, size = fields["flac"]
    last.write_bytes(last.read_bytes()[:offset + size // 2])
    shards = WebDataset(tmp_path, split="all", on_error="skip")
    cut = next(i for i in range(len(shards)) if shards.item_id(i).endswith(key))
    with pytest.raises(UnreadableItem, match=f"shard-000001.tar: sample '{key}'.*truncated"):
        shards[cut]


def test_a_sample_without_the_item_field_says_which_fields_it_has(tmp_path):
    pack_source(images(3), tmp_path)
    with pytest.raises(DataError, match="no flac field, only png, cls"):
        WebDataset(tmp_path, split="all", item="flac")[0]


def test_split_folders_give_their_splits_and_one_folder_is_held_out_from(tmp_path):
    pack_source(images(9), tmp_path / "split" / "train")
    pack_source(images(4), tmp_path / "split" / "test")
    assert len(WebDataset(tmp_path / "split", split="test")) == 4
    pack_source(images(20), tmp_path / "one")
    train, test = (WebDataset(tmp_path / "one", split=s, holdout_fraction=0.25) for s in ("train", "test"))
    assert len(train) + len(test) == 20 and "held-out" in train.split_note
    assert not {train.item_id(i) for i in range(len(train))} & {test.item_id(i) for i in range(len(test))}


def test_the_epoch_order_reads_a_shard_or_two_per_window(tmp_path):
    pack_source(images(40), tmp_path, shard_size=10)
    shards = WebDataset(tmp_path, split="all", shuffle_buffer=5)
    order = shards.order(torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(40))
    shard_of = [shards.locate(i)[0] for i in order.tolist()]
    assert all(len(set(shard_of[i:i + 5])) <= 2 for i in range(0, 40, 5))


def test_two_processes_read_disjoint_samples_whose_union_is_one_process_epoch(tmp_path):
    pack_source(images(40), tmp_path, shard_size=10)
    shards = WebDataset(tmp_path, split="all", shuffle_buffer=7)

    def seen(rank: int, world_size: int) -> list[str]:
        batches = ViewBatches(shards, Identity(), stack_views, BatchPlan(40, 8, 3, rank=rank, world_size=world_size))
        return [shards.item_id(i) for b in epoch_loader(batches, 1, 0, 0, False) for i in b.index.tolist()]

    first, second = seen(0, 2), seen(1, 2)
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(seen(0, 1)) and len(first) == len(second) == 20


def test_loader_workers_read_the_same_batches_as_the_main_process(tmp_path):
    pack_source(images(24), tmp_path, shard_size=5)
    batches = ViewBatches(WebDataset(tmp_path, split="all", shuffle_buffer=6), Identity(), stack_views,
                          BatchPlan(24, 6, seed=1))
    alone, workers = (list(epoch_loader(batches, 0, 0, n, False)) for n in (0, 2))
    assert all(torch.equal(a.views[0], b.views[0]) for a, b in zip(alone, workers)) and len(workers) == 4


def test_data_pack_writes_each_split_of_a_recipe_data_block(tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8), y_train=np.arange(12) % 4,
             x_test=rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8), y_test=np.arange(5) % 4)
    block = f"{{name: image-npz, path: {npz}}}"
    assert main(["data", "pack", block, str(tmp_path / "out"), "--split", "train", "--split", "test",
                 "--shard-size", "5"]) == 0
    assert "3 shards, 12 samples (png + cls), 4 classes" in capsys.readouterr().err
    index = read_index(tmp_path / "out" / "test" / INDEX)
    assert index.counts == [5] and index.info["class_counts"] == [2, 1, 1, 1]
    assert index.info["source"]["split"] == "test"
    assert json.loads((tmp_path / "out" / "train" / INDEX).read_text())["shardlist"][0]["nsamples"] == 5


def test_data_pack_refuses_items_it_cannot_store(tmp_path):
    with pytest.raises(DataError, match="cannot store an item of type object"):
        pack_source(Items([object()]), tmp_path)


@pytest.fixture
def hf_images(tmp_path) -> tuple[Path, Items]:
    """A ``save_to_disk`` DatasetDict of PNG images (an ``Image`` feature) with ``ClassLabel`` labels."""
    import datasets
    from torchvision.io import encode_png

    original = images(12)
    rows = {"image": [{"bytes": encode_png(x).numpy().tobytes(), "path": None} for x in original.items],
            "label": original.labels.tolist()}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["c0", "c1", "c2"])})
    table = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": table.select(range(8)), "test": table.select(range(8, 12))}).save_to_disk(
        str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "images.parquet"), batch_size=4)
    return tmp_path, original


def test_a_saved_hugging_face_dataset_gives_its_splits_images_and_class_labels(hf_images):
    folder, original = hf_images
    test = HFDataset(folder / "saved", item="image", label="label", split="test")
    assert len(test) == 4 and test.class_names == ["c0", "c1", "c2"]
    assert all(same(test[i], original[8 + i]) for i in range(4))
    assert test.labels.tolist() == original.labels[8:].tolist()
    assert test.order(torch.Generator()) is None, "memory-mapped rows: a uniform shuffle"


def test_streaming_parquet_reads_row_groups_as_shards(hf_images):
    folder, original = hf_images
    rows = HFDataset(folder / "images.parquet", item="image", label="label", split="all", streaming=True,
                     shuffle_buffer=4)
    assert rows.counts.tolist() == [4, 4, 4] and rows.class_names == ["c0", "c1", "c2"]
    assert all(same(rows[i], original[i]) for i in range(12)) and rows.labels.tolist() == original.labels.tolist()
    order = rows.order(torch.Generator().manual_seed(0))
    assert all(len({rows.locate(i)[0] for i in order[w:w + 4].tolist()}) <= 2 for w in range(0, 12, 4))


@pytest.mark.parametrize("streaming", [False, True])
def test_parquet_files_in_the_hub_layout_give_their_splits_of_series_and_text(tmp_path, streaming):
    import pyarrow
    import pyarrow.parquet

    for split, count in (("train", 6), ("test", 3)):
        rows = {"series": [[[float(i), i + 0.5], [0.0, -1.0]] for i in range(count)],
                "caption": [f" {split} {i} " for i in range(count)], "label": [i % 2 for i in range(count)]}
        (tmp_path / "data").mkdir(exist_ok=True)
        pyarrow.parquet.write_table(pyarrow.table(rows), tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    test = HFDataset(tmp_path, item=["series", "caption"], label="label", split="test", streaming=streaming)
    assert len(test) == 3 and test.labels.tolist() == [0, 1, 0] and test.split_note is None
    series_item, caption = test[2]
    assert torch.equal(series_item, torch.tensor([[2.0, 2.5], [0.0, -1.0]])) and caption == "test 2"


def test_a_missing_column_names_the_columns_there(hf_images):
    folder, _ = hf_images
    with pytest.raises(DataError, match="no column 'img'; .* image, label"):
        HFDataset(folder / "images.parquet", item="img", streaming=True)
