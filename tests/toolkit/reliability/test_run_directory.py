"""The run directory: one run at a time, whole metric records, clear errors for disk faults."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import RECIPES, ROOT
from helpers import QUIET, kill_at, make_trainer, run_cli
from toolkit import rundir
from toolkit.engine import Trainer
from toolkit.plugins import Plugins
from toolkit.rundir import RunDirectory, RunDirectoryError

TINY = RECIPES / "tiny.yaml"
FAST = ["eval.evaluators=[]", "trainer.checkpoint_every=2"]


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_second_run_on_a_directory_in_use_is_refused_naming_the_holder(plugins: Plugins, tmp_path: Path) -> None:
    holder = make_trainer(TINY, plugins, tmp_path / "run", *FAST)
    second = run_cli("train", str(TINY), *FAST, "--run-dir", str(tmp_path / "run"), cwd=ROOT)
    assert second.returncode == 1
    assert f"{tmp_path / 'run'} is in use by pid {os.getpid()} on" in second.stderr
    assert "wait for that run to finish or choose another --run-dir" in second.stderr
    holder.directory.unlock()


def test_the_lock_of_a_finished_run_is_released(plugins: Plugins, tmp_path: Path) -> None:
    trainer = make_trainer(TINY, plugins, tmp_path / "run", *FAST, "schedule.max_steps=2")
    trainer.fit()
    trainer.close()
    Trainer.resume(tmp_path / "run", plugins, ["schedule.max_steps=4"], log=QUIET).fit()
    assert steps_logged(tmp_path / "run") == [1, 2, 3, 4]


def test_a_torn_last_record_from_a_cut_write_does_not_stop_the_resume(plugins: Plugins, tmp_path: Path) -> None:
    kill_at(3, make_trainer(TINY, plugins, tmp_path / "run", *FAST), plugins)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "st')
    Trainer.resume(tmp_path / "run", plugins, log=QUIET).fit()
    assert steps_logged(tmp_path / "run") == list(range(1, 9))


def test_reading_metrics_drops_a_torn_last_line_with_a_warning(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert RunDirectory(tmp_path).read_metrics() == [{"step": 1}, {"step": 2}]
    assert f"{tmp_path / 'metrics.jsonl'}:3: dropped a torn last record" in capsys.readouterr().err


def test_a_damaged_line_inside_the_metrics_is_an_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(RunDirectoryError, match=r"metrics.jsonl:2: not a JSON record"):
        RunDirectory(tmp_path).read_metrics()


def test_a_kill_while_truncating_the_metrics_leaves_them_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = "".join(json.dumps({"step": step}) + "\n" for step in range(1, 1001))
    (tmp_path / "metrics.jsonl").write_text(history)

    def killed(*args: object) -> None:
        raise KeyboardInterrupt("killed during the rename")

    monkeypatch.setattr(rundir.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        RunDirectory(tmp_path).truncate_metrics(None, 10)
    assert (tmp_path / "metrics.jsonl").read_text() == history
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


@pytest.mark.parametrize(("code", "advice"), [
    (errno.ENOSPC, "the disk is full; free space"),
    (errno.EROFS, "the folder is not writable"),
    (errno.EACCES, "the folder is not writable"),
])
def test_a_failed_metrics_write_is_one_line_naming_the_file(code: int, advice: str, plugins: Plugins,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(TINY, plugins, tmp_path / "run", *FAST)
    real_write = os.write

    def failing_write(descriptor: int, data: bytes) -> int:
        if b'"kind": "train"' in data:
            raise OSError(code, os.strerror(code))
        return real_write(descriptor, data)

    monkeypatch.setattr(rundir.os, "write", failing_write)
    with pytest.raises(RunDirectoryError, match=f"cannot write {tmp_path / 'run' / 'metrics.jsonl'}: "
                                                f"{os.strerror(code)}; {advice}"):
        trainer.fit()
    trainer.directory.unlock()


def test_stale_temporary_checkpoints_are_removed_when_a_run_starts(plugins: Plugins, tmp_path: Path) -> None:
    kill_at(3, make_trainer(TINY, plugins, tmp_path / "run", *FAST), plugins)
    stale = tmp_path / "run" / "checkpoints" / ".last.pt.12345.tmp"
    stale.write_bytes(b"half a checkpoint")
    Trainer.resume(tmp_path / "run", plugins, log=QUIET)
    assert not stale.exists()


def test_a_corrupt_image_read_by_a_loader_worker_gives_the_same_message_as_in_process(tmp_path: Path) -> None:
    for label in ("cats", "dogs"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (40 * i, 100, 200)).save(tmp_path / "photos" / label / f"{i}.png")
    (tmp_path / "photos" / "dogs" / "2.png").write_bytes(b"not an image")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"extends: {TINY}\ndata: {{name: image-folder, path: photos}}\n"
                      "eval: {evaluators: [], holdout_fraction: 0}\n")
    messages = []
    for workers in (0, 2):
        result = run_cli("train", str(recipe), "trainer.batch_size=8", f"trainer.num_workers={workers}",
                         "--run-dir", str(tmp_path / f"run{workers}"), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        messages.append(result.stderr.strip().splitlines()[-1])
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"error: {tmp_path / 'photos' / 'dogs' / '2.png'}: cannot decode this image")


def test_a_factory_bug_shows_its_traceback_naming_the_component_and_plugin(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "broken.py").write_text(
        "from toolkit import hookimpl\nfrom selfsup_image.augmentations import SimCLRAugmentation\n\n"
        "def broken(size: int = 32):\n    return {}['missing']\n\n"
        "@hookimpl\ndef register_augmentations(register):\n    register('broken', broken)\n")
    result = run_cli("train", str(TINY), "augmentation={name: broken}", "--run-dir", str(tmp_path / "run"),
                     "--plugins-dir", str(tmp_path / "plugins"), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-2:] == ["KeyError: 'missing'", "while building augmentation 'broken' "
                                                        "of plugin 'local:broken'"]
