"""Bytes to items, by file extension (tar members) or by content (table cells).

============================================  ================================================
extension                                     item
============================================  ================================================
``jpg`` ``jpeg`` ``png`` ``webp`` ``bmp``     uint8 ``(C, H, W)`` (libjpeg-turbo / libpng via torchvision),
``gif``                                       RGB, or one channel when the index says so
``flac`` ``wav`` ``ogg`` ``mp3``              float32 ``(C, L)`` in ``[-1, 1]`` (soundfile), resampled to
                                              the encoder's sample rate
``npy``                                       the array as a tensor (series, clips, features)
``txt`` ``text``                              a string, surrounding whitespace stripped
``json``                                      the value; a list of strings as a tuple
``cls`` ``label`` ``index``                   an int (labels)
============================================  ================================================

A decoding failure raises ``ValueError`` (or ``RuntimeError``/``EOFError`` from the libraries);
the data sources turn it into a report naming the shard and the key.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from toolkit.extras import require

IMAGE = ("jpg", "jpeg", "png", "webp", "bmp", "gif")
AUDIO = ("flac", "wav", "ogg", "mp3")
TEXT = ("txt", "text")
LABEL = ("cls", "label", "index")
ARRAY = ("npy",)
DECODED = (*IMAGE, *AUDIO, *TEXT, *LABEL, *ARRAY, "json")
_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"fLaC", "flac"),
          (b"OggS", "ogg"), (b"ID3", "mp3"), (b"\x93NUMPY", "npy"))


@dataclass(frozen=True)
class Decoding:
    """How items are decoded: images with ``channels`` (1 or 3) channels, audio at
    ``sample_rate`` (``None``: as stored)."""

    channels: int = 3
    sample_rate: int | None = None


def decode(field: str, data: bytes, decoding: Decoding) -> Any:
    """The item held in ``data``, a field named ``field`` (``png``, ``0.txt``: the last extension counts)."""
    kind = field.rpartition(".")[2].lower()
    if kind in IMAGE:
        from torchvision.io import ImageReadMode, decode_image

        mode = ImageReadMode.GRAY if decoding.channels == 1 else ImageReadMode.RGB
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    if kind in AUDIO:
        return _audio(data, decoding.sample_rate)
    if kind in ARRAY:
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).copy())
    if kind in TEXT:
        return data.decode("utf-8").strip()
    if kind in LABEL:
        return int(data.decode("ascii").strip())
    if kind == "json":
        value = json.loads(data.decode("utf-8"))
        return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value
    raise ValueError(f"no decoder for field {field!r} (decoded: {', '.join(DECODED)})")


def decode_value(value: Any, decoding: Decoding) -> Any:
    """An item from a table cell: encoded bytes (an ``Image``/``Audio`` feature read without
    decoding, ``{"bytes", "path"}``) decoded by their content, strings as they are (stripped),
    numeric lists and arrays as float32 tensors (``(L,)`` as ``(1, L)``)."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        data = value.get("bytes")
        if data is None:
            with open(value["path"], "rb") as handle:
                data = handle.read()
        return decode(sniff(data), data, decoding)
    if isinstance(value, (bytes, bytearray)):
        return decode(sniff(bytes(value)), bytes(value), decoding)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"a cell of {array.dtype} values; map a column of numbers, strings, images or audio")
        tensor = torch.from_numpy(array.astype(np.uint8 if array.dtype == np.uint8 else np.float32))
        return tensor[None] if tensor.dim() == 1 else tensor
    raise ValueError(f"a cell of type {type(value).__name__}; map a column of numbers, strings, images or audio")


def sniff(data: bytes) -> str:
    """The format of encoded bytes from their first bytes (``png``, ``wav``, ...)."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] in (b"WAVE", b"WEBP"):
        return "wav" if data[8:12] == b"WAVE" else "webp"
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    raise ValueError(f"unknown encoded format (first bytes {data[:8]!r}); images, audio and .npy arrays are decoded")


def _audio(data: bytes, sample_rate: int | None) -> Tensor:
    soundfile = require("soundfile", "decoding audio")
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if len(samples) == 0:
        raise ValueError("the audio holds no samples")
    audio = torch.from_numpy(np.ascontiguousarray(samples.T))
    if sample_rate is None or sample_rate == rate:
        return audio
    resample = require("torchaudio.functional", f"resampling audio from {rate} to {sample_rate} Hz").resample
    return resample(audio, int(rate), int(sample_rate))
