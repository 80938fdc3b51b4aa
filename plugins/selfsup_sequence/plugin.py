"""Registers the sequence components; declared as the ``sequence`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import DataSource, hookimpl
from toolkit.hookspecs import Register

from selfsup_sequence.augmentations import CPCAudioAugmentation, CPCSeriesAugmentation
from selfsup_sequence.datasources import FSDD, AudioFolder, ucr_npz, ucr_ts
from selfsup_sequence.encoders import CPCAudioEncoder, CPCSeriesEncoder
from selfsup_sequence.objectives import CPC
from selfsup_sequence.series import SeriesSet, series_file
from selfsup_sequence.ts2vec import DilatedConvEncoder, TS2Vec


@hookimpl
def register_augmentations(register: Register) -> None:
    register("cpc-audio", CPCAudioAugmentation)
    register("cpc-series", CPCSeriesAugmentation)


@hookimpl
def register_encoders(register: Register) -> None:
    register("cpc-audio", CPCAudioEncoder)
    register("cpc-series", CPCSeriesEncoder)
    register("ts2vec", DilatedConvEncoder)


@hookimpl
def register_objectives(register: Register) -> None:
    register("cpc", CPC)
    register("ts2vec", TS2Vec)


@hookimpl
def register_datasources(register: Register) -> None:
    register("fsdd", FSDD)
    register("audio-folder", AudioFolder)
    register("ucr-npz", ucr_npz)
    register("ucr-ts", ucr_ts)
    register("series", series_file)


@hookimpl
def render_items(source: DataSource, indices: list[int]) -> list[str] | None:
    """Audio and series items in a report: the first channel as a sparkline and the length."""
    if not isinstance(source, (FSDD, AudioFolder, SeriesSet)):
        return None
    from toolkit.reporting import sparkline_html, text_html

    rate = getattr(source, "sample_rate", None)
    shown = []
    for index in indices:
        item = source[index]  # (C, L) float32; trailing NaN is padding
        length = f"{item.shape[-1] / rate:.2f} s" if rate else f"{item.shape[0]} x {item.shape[-1]}"
        shown.append(sparkline_html(item[0].tolist()) + text_html(length))
    return shown
