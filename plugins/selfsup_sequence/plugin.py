"""Registers the sequence components; declared as the ``sequence`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import hookimpl
from toolkit.hookspecs import Register

from selfsup_sequence.augmentations import CPCAudioAugmentation, CPCSeriesAugmentation
from selfsup_sequence.datasources import FSDD, AudioFolder, ucr_npz, ucr_ts
from selfsup_sequence.encoders import CPCAudioEncoder, CPCSeriesEncoder
from selfsup_sequence.objectives import CPC
from selfsup_sequence.series import series_file


@hookimpl
def register_augmentations(register: Register) -> None:
    register("cpc-audio", CPCAudioAugmentation)
    register("cpc-series", CPCSeriesAugmentation)


@hookimpl
def register_encoders(register: Register) -> None:
    register("cpc-audio", CPCAudioEncoder)
    register("cpc-series", CPCSeriesEncoder)


@hookimpl
def register_objectives(register: Register) -> None:
    register("cpc", CPC)


@hookimpl
def register_datasources(register: Register) -> None:
    register("fsdd", FSDD)
    register("audio-folder", AudioFolder)
    register("ucr-npz", ucr_npz)
    register("ucr-ts", ucr_ts)
    register("series", series_file)
