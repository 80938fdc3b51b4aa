"""Sequence data sources. Items are float32 tensors ``(C, L)`` (mono audio: ``(1, L)``); labels
are int64 class indices chosen by the ``label`` parameter.

- ``fsdd``: the Free Spoken Digit Dataset npz (``audio`` int16 concatenated, ``offsets``,
  ``label``, ``speaker``, ``is_test``, ``sample_rate``); labels ``digit`` or ``speaker``.
- ``audio-folder``: ``.wav`` (PCM, read with the standard library) and ``.flac`` (read with
  ``soundfile``, a dependency of selfsup) files under ``path/<split>/``; the label is the first folder level.
- ``ucr-npz``: ``x_{split}`` float ``(N, C, L)`` (NaN-padded when lengths vary), optional ``y_{split}``.
- ``ucr-ts``: UCR/UEA ``.ts`` files ``<Name>_TRAIN.ts`` / ``<Name>_TEST.ts`` (see :mod:`tsfile`).
- ``series`` (:mod:`series`): CSV/TSV, ``.npy`` and parquet files; the UCR sources share its code.

Audio sources resample to the encoder's ``input_spec["sample_rate"]`` with torchaudio and read
``.flac`` with soundfile: both come with ``selfsup-toolkit[audio]``.
"""

from __future__ import annotations

import importlib.util
import struct
import wave
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from selfsup_sequence.series import SeriesSet, series_split
from selfsup_sequence.tsfile import read_ts
from toolkit.compatibility import Contract, declare
from toolkit.data import holdout_split, split_folder, subset_indices
from toolkit.extras import require
from toolkit.interfaces import DataSource

if importlib.util.find_spec("torchaudio") is not None:
    # light (40 ms), and imported now so that a torchaudio build that does not match torch fails
    # this plugin's load (reported by `selfsup plugins`) instead of a run; when torchaudio is not
    # installed, resampling says which extra installs it
    import torchaudio.functional  # noqa: F401

AUDIO_EXTENSIONS = (".wav", ".flac")


@declare(Contract(produces={"sequence"}))
class FSDD(DataSource):
    """The Free Spoken Digit Dataset (3,000 recordings, 8 kHz, 6 speakers) in its npz layout.

    ``split``: ``train`` (recording index 5-49, 2,700), ``test`` (index 0-4, 300: the
    official split) or ``all``. ``label``: ``digit`` (10 classes) or ``speaker`` (6 classes,
    in the file's ``speaker_names`` order; every speaker is in both splits). ``speakers`` keeps
    the recordings of the named speakers only (``[theo, yweweler]``): training on some speakers
    and probing on the others tests what carries over to voices never heard; ``digits`` keeps
    the recordings of the given digits only (``[5, 6, 7, 8, 9]``), the same for words never
    heard. Items ``(1, L)`` in ``[-1, 1)`` at the encoder's sample rate.
    """

    def __init__(self, path: Path, split: Literal["train", "test", "all"] = "train",
                 label: Literal["digit", "speaker"] = "digit", speakers: list[str] | None = None,
                 digits: list[int] | None = None, limit: int | None = None,
                 input_spec: dict[str, Any] | None = None) -> None:
        if split not in ("train", "test", "all") or label not in ("digit", "speaker"):
            raise ValueError(f"fsdd: split must be train|test|all and label digit|speaker, got {split!r}, {label!r}")
        with np.load(_existing(path)) as archive:
            _require(archive.files, ["audio", "offsets", "label", "speaker", "is_test", "sample_rate"], path)
            audio, offsets = archive["audio"], archive["offsets"]
            keep = np.ones(len(offsets) - 1, dtype=bool) if split == "all" else archive["is_test"] == (split == "test")
            if speakers is not None:
                keep &= np.isin(archive["speaker"], _speaker_indices(archive, speakers, path))
            if digits is not None:
                if not digits or not set(digits) <= set(range(10)):
                    raise ValueError(f"fsdd: data.digits must list digits 0-9 to keep, got {digits!r}")
                keep &= np.isin(archive["label"], digits)
            chosen = np.flatnonzero(keep)
            labels = archive["label" if label == "digit" else "speaker"]
            self.native_rate = int(archive["sample_rate"])
            self.num_classes = int(labels.max()) + 1
        chosen = chosen[subset_indices(len(chosen), limit).numpy()]
        self.audio = torch.from_numpy(audio)
        self.starts, self.ends = offsets[:-1][chosen], offsets[1:][chosen]
        self.labels = torch.from_numpy(labels[chosen].astype(np.int64))
        self.sample_rate = int((input_spec or {}).get("sample_rate") or self.native_rate)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Tensor:
        wav = self.audio[int(self.starts[index]):int(self.ends[index])].float()[None] / 32768
        return _resample(wav, self.native_rate, self.sample_rate)


@declare(Contract(produces={"sequence"}))
class AudioFolder(DataSource):
    """Audio files under ``path/<split>/``, found recursively and sorted; with ``label: folder``
    the class is the first folder level below that root (LibriSpeech: the speaker;
    ``<class>/<file>.wav`` trees: the class), with ``label: none`` the data is unlabelled.

    A layout without a ``test/`` folder (``path/<class>/*.wav``, ``path/*.wav``) is one list:
    ``train`` and ``test`` are a seeded held-out split of it (``eval.holdout_fraction``,
    stratified by class), never the same files. Any other split (``train-clean-100``) is a folder.

    Decoding happens on access; a corrupt, empty or unsupported file raises a ``ValueError``
    naming it. Multichannel files give ``(C, L)`` items; ``mono: true`` averages channels.
    """

    def __init__(self, path: Path, split: str = "train", label: Literal["folder", "none"] = "none",
                 mono: bool = True, limit: int | None = None, input_spec: dict[str, Any] | None = None,
                 holdout_fraction: float = 0.1) -> None:
        if not path.is_dir():
            raise FileNotFoundError(f"audio-folder: {path} is not a folder")
        root, one_list = split_folder(path, split)
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"audio-folder: no {'/'.join(AUDIO_EXTENSIONS)} files under {root}")
        labels = None
        if label == "folder":
            loose = [f for f in files if f.parent == root]
            if loose:
                raise ValueError(f"audio-folder: label: folder takes the class from the first folder below {root}, "
                                 f"but {loose[0]} lies directly in it; move it into a class folder or use label: none")
            classes = [f.relative_to(root).parts[0] for f in files]
            self.class_names = sorted(set(classes))
            labels = torch.tensor([self.class_names.index(c) for c in classes], dtype=torch.int64)
            self.num_classes = len(self.class_names)
        chosen = torch.arange(len(files))
        if one_list:
            chosen, self.split_note = holdout_split(len(files), split, holdout_fraction, labels,
                                                    f"audio folder {root}")
        chosen = chosen[subset_indices(len(chosen), limit)]
        self.files = [files[i] for i in chosen.tolist()]
        self.labels = labels[chosen] if labels is not None else None
        self.mono = mono
        self.sample_rate = (input_spec or {}).get("sample_rate")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        audio, rate = read_audio(self.files[index])
        if self.mono:
            audio = audio.mean(dim=0, keepdim=True)
        return _resample(audio, rate, int(self.sample_rate or rate))


@declare(Contract(produces={"sequence"}))
def ucr_npz(path: Path, split: str = "train", label: Literal["class"] = "class", limit: int | None = None,
            holdout_fraction: float = 0.1, standardize: bool = False) -> SeriesSet:
    """A UCR/UEA dataset as npz: ``x_{split}`` float ``(N, C, L)`` (or ``(N, L)``), optional
    ``y_{split}`` int labels (without them the data is unlabelled).

    Shorter series are NaN-padded at the end (kept: the augmentations and encoders trim it). A
    file without ``x_test`` has no test split: ``train`` and ``test`` are a seeded held-out split
    of ``x_train`` (``eval.holdout_fraction``). ``label: class`` is the only label UCR data carries.
    ``standardize: true`` scales every channel of every split by the mean and standard deviation
    of ``x_train`` (:func:`~selfsup_sequence.series.series_split`).
    """
    path = _existing(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"ucr-npz: {path} is not an .npz archive; for a .npy array or a CSV/parquet table use "
                         f"data: {{name: series, path: {path.name}}} (docs/sequences.md shows the layouts)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"ucr-npz: {path} is not a readable .npz archive ({error}); for other files use the "
                         f"series data source") from None
    with archive:
        one_list = "x_test" not in archive.files and split in ("train", "test", "all")
        key = "x_train" if one_list else f"x_{split}"
        _require(archive.files, [key], path)
        x = archive[key]
        y = archive["y" + key[1:]] if "y" + key[1:] in archive.files else None
        # the statistics of x_train (series_split uses x itself when it is x_train or a held-out part of it)
        train = archive["x_train"] if standardize and key != "x_train" and "x_train" in archive.files else None
    return series_split(x, y, split, one_list, limit, holdout_fraction, f"{path} ({key})", None, standardize, train)


@declare(Contract(produces={"sequence"}))
def ucr_ts(path: Path, split: str = "train", label: Literal["class"] = "class", limit: int | None = None,
           holdout_fraction: float = 0.1, standardize: bool = False) -> SeriesSet:
    """A UCR/UEA ``.ts`` dataset: ``path`` is a folder with ``<Name>_TRAIN.ts`` and
    ``<Name>_TEST.ts`` (the ones named after the folder when it holds several), or one ``.ts``
    file (then ``train`` and ``test`` are a seeded held-out split of it,
    ``eval.holdout_fraction``); variable lengths are NaN-padded at the end. Files with
    ``@classLabel false`` are unlabelled. ``standardize: true`` scales every channel of every
    split by the mean and standard deviation of the training series
    (:func:`~selfsup_sequence.series.series_split`)."""
    one_list = not path.is_dir()
    train = None
    if not one_list:
        if standardize and split != "train":
            train = read_ts(_split_file(path, "train"))[0]
        path = _split_file(path, split)
    x, y, class_names = read_ts(_existing(path))
    return series_split(x, y, split, one_list, limit, holdout_fraction, str(path), class_names, standardize, train)


def _split_file(folder: Path, split: str) -> Path:
    """``<folder>/<Name>_<SPLIT>.ts``: the one named after the folder when it holds several."""
    named = folder / f"{folder.name}_{split.upper()}.ts"  # the archive's layout: <Name>/<Name>_TRAIN.ts
    found = [named] if named.is_file() else sorted(folder.glob(f"*_{split.upper()}.ts"))
    if len(found) != 1:
        raise FileNotFoundError(f"ucr-ts: expected one *_{split.upper()}.ts file in {folder}, found "
                                f"{[f.name for f in found] or 'none'}")
    return found[0]


def read_audio(file: Path) -> tuple[Tensor, int]:
    """``(audio (C, L) float32 in [-1, 1], sample_rate)`` of a PCM ``.wav`` or a ``.flac``."""
    if file.suffix.lower() == ".flac":
        return _read_flac(file)
    try:
        with wave.open(str(file), "rb") as handle:
            channels, width, rate = handle.getnchannels(), handle.getsampwidth(), handle.getframerate()
            frames = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError, OSError, RuntimeError, struct.error) as error:  # wave's errors on broken chunks
        raise ValueError(f"{file}: not a readable PCM wav file ({error}); re-encode it as 16-bit PCM") from error
    if not frames:
        raise ValueError(f"{file}: the wav file holds no audio samples")
    if width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        samples = (raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16)
        data = np.where(samples >= 1 << 23, samples - (1 << 24), samples).astype(np.float32) / (1 << 23)
    elif width in (1, 2, 4):
        dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
        data = np.frombuffer(frames, dtype=dtype).astype(np.float32)
        data = (data - 128) / 128 if width == 1 else data / float(1 << (8 * width - 1))
    else:
        raise ValueError(f"{file}: unsupported sample width of {width} bytes")
    usable = len(data) // channels * channels
    return torch.from_numpy(np.ascontiguousarray(data[:usable].reshape(-1, channels).T)), rate


def _read_flac(file: Path) -> tuple[Tensor, int]:
    soundfile = require("soundfile", f"reading {file} (.flac; .wav needs nothing)")
    try:
        data, rate = soundfile.read(str(file), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own LibsndfileError and RuntimeError
        raise ValueError(f"{file}: not a readable flac file ({error})") from error
    if len(data) == 0:
        raise ValueError(f"{file}: the flac file holds no audio samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def _resample(audio: Tensor, rate: int, target: int) -> Tensor:
    if rate == target:
        return audio
    return require("torchaudio.functional", f"resampling audio from {rate} to {target} Hz").resample(
        audio, rate, target)


def _speaker_indices(archive: Any, speakers: list[str], path: Path) -> list[int]:
    """Indices of the named speakers in the archive's ``speaker_names``."""
    _require(archive.files, ["speaker_names"], path)
    names = [str(n) for n in archive["speaker_names"]]
    unknown = [s for s in speakers if s not in names]
    if unknown or not speakers:
        raise ValueError(f"fsdd: data.speakers: unknown speaker(s) {', '.join(unknown) or '(none given)'}; "
                         f"{path} has {', '.join(names)}")
    return [names.index(s) for s in speakers]


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    return path


def _require(files: list[str], keys: list[str], path: Path) -> None:
    missing = [k for k in keys if k not in files]
    if missing:
        raise KeyError(f"{path}: missing arrays {', '.join(missing)} (it has {', '.join(files)})")
