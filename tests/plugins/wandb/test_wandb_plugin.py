"""The built-in Weights & Biases tracker: off by default, offline files under the run directory when on."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from helpers import make_trainer

pytest.importorskip("wandb", reason="wandb is not installed (pip install selfsup-toolkit[wandb])")

BLOCK = 32 * 1024


def records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-style log blocks
    whose chunks (4-byte checksum, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) hold them."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending, found = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        room = BLOCK - position % BLOCK
        if room < 7:
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0 and length == 0:  # zero padding to the end of a block
            position += room
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """The records once wandb's writer (a process of its own) has written the run's ``exit`` record."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def history(found: list) -> dict[str, list[int]]:
    """``{metric: [steps it was logged at]}`` of the records of a ``.wandb`` file."""
    steps: dict[str, list[int]] = {}
    for record in found:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    steps.setdefault(key, []).append(record.history.step.num)
    return steps


def test_with_selfsup_wandb_a_run_logs_offline_into_its_directory(tiny_recipe, plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_WANDB", "1")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "run"
    make_trainer(tiny_recipe, plugins, run_dir, "eval.at_start=true", "eval.evaluators=[{name: knn, k: 5}]").fit()
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and (run_dir / "wandb" / "run-id").read_text().strip() in files[0].name
    found = finished_records(files[0])
    logged = history(found)
    assert logged["train/loss"] == list(range(1, 9)) and logged["train/lr"] == list(range(1, 9))
    assert logged["eval/knn_top1"] == [0, 8]
    run = next(r.run for r in found if r.WhichOneof("record_type") == "run")
    assert run.display_name == "tiny" and run.project == "selfsup"


def test_a_stopped_run_is_finished_with_a_non_zero_exit_code(tiny_recipe, plugins, tmp_path, monkeypatch):
    from toolkit import TrainingInterrupted

    monkeypatch.setenv("SELFSUP_WANDB", "1")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run", "eval.evaluators=[]")
    trainer.request_stop()
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    [file] = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    found = finished_records(file)
    assert [r.exit.exit_code for r in found if r.WhichOneof("record_type") == "exit"] == [130]
    assert history(found)["train/loss"] == [1]


def test_without_selfsup_wandb_nothing_is_logged(tiny_recipe, plugins, tmp_path, monkeypatch):
    monkeypatch.delenv("SELFSUP_WANDB", raising=False)
    make_trainer(tiny_recipe, plugins, tmp_path / "run", "schedule.max_steps=2").fit()
    assert not (tmp_path / "run" / "wandb").exists()
