"""Optional dependencies by modality: the core installs without text, audio and video
libraries, and a component that needs a missing one says which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import ROOT

OPTIONAL = {"transformers": "text", "datasets": "text", "torchaudio": "audio", "soundfile": "audio", "av": "video"}

HIDE = """
import importlib.abc, importlib.util, sys
hidden = {hidden!r}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in hidden:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
installed = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args: None if name.partition('.')[0] in hidden else installed(name, *args)
"""
"""Runs first in a fresh interpreter: the ``hidden`` libraries look as if they were not installed."""


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].split("!")[0].strip()
            for r in requirements}


def _run_without(hidden: set[str], code: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SELFSUP_")}
    return subprocess.run([sys.executable, "-c", HIDE.format(hidden=hidden) + code], capture_output=True, text=True,
                          env=environment, timeout=300, cwd=ROOT)


def test_the_core_needs_no_text_audio_or_video_library_and_each_extra_installs_its_own():
    project = _project()
    assert not _names(project["dependencies"]) & OPTIONAL.keys()
    extras = project["optional-dependencies"]
    for library, extra in OPTIONAL.items():
        assert library in _names(extras[extra])
    assert {"text", "audio", "video", "tensorboard", "text-models"} <= set(
        extras["all"][0].split("[")[1].rstrip("]").split(","))


def test_without_the_text_extra_the_text_encoder_names_it():
    completed = _run_without({"transformers", "datasets"}, (
        "from toolkit.plugins import discover\nfrom toolkit.recipe import build\n"
        "plugins = discover()\nassert not plugins.infos['text'].error, plugins.infos['text'].error\n"
        "build(plugins, 'encoder', {'name': 'hf-transformer', 'model': 'bert-base-uncased'})"))
    assert "MissingExtra: encoder hf-transformer needs transformers, which is not installed: pip install " \
           "'selfsup-toolkit[text]'" in completed.stderr


def test_without_the_audio_extra_the_sequence_plugin_loads_and_resampling_names_it():
    completed = _run_without({"torchaudio", "soundfile"}, (
        "import torch\nfrom toolkit.plugins import discover\nplugins = discover()\n"
        "assert not plugins.infos['sequence'].error, plugins.infos['sequence'].error\n"
        "from selfsup_sequence.datasources import _resample\n_resample(torch.zeros(1, 80), 8000, 16000)"))
    assert "resampling audio from 8000 to 16000 Hz needs torchaudio, which is not installed: pip install " \
           "'selfsup-toolkit[audio]'" in completed.stderr


def test_without_the_video_extra_reading_a_video_names_it(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"not decoded: PyAV is missing")
    completed = _run_without({"av"}, (
        "from toolkit.plugins import discover\nplugins = discover()\n"
        "assert not plugins.infos['video'].error, plugins.infos['video'].error\n"
        f"from selfsup_video.videoio import probe\nprobe({str(tmp_path / 'clip.mp4')!r})"))
    assert "needs av, which is not installed: pip install 'selfsup-toolkit[video]'" in completed.stderr


def test_a_missing_extra_is_a_one_line_error_from_the_command_line(tmp_path):
    completed = _run_without({"transformers", "datasets"}, (
        "import sys\nfrom toolkit.cli import main\n"
        f"sys.exit(main(['train', {str(ROOT / 'recipes' / 'simcse-tiny.yaml')!r}, "
        f"'data.path={str(ROOT / 'README.md')}', '--run-dir', {str(tmp_path / 'run')!r}]))"))
    assert completed.returncode == 1 and completed.stderr.strip().splitlines()[-1].startswith(
        "error: encoder hf-transformer needs transformers")
