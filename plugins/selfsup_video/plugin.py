"""Registers the video components; declared as the ``video`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import DataSource, hookimpl
from toolkit.hookspecs import Register

from selfsup_video.augmentations import TemporalAugmentation
from selfsup_video.datasources import FrameArrays, FrameFolders, VideoFiles, VideoSource
from selfsup_video.encoders import FrameEncoder, R2Plus1D18, R3D18
from selfsup_video.objectives import TemporalContrast
from selfsup_video.retrieval import VideoRetrieval


@hookimpl
def register_augmentations(register: Register) -> None:
    register("temporal", TemporalAugmentation)


@hookimpl
def register_encoders(register: Register) -> None:
    register("frame-encoder", FrameEncoder)
    register("r2plus1d-18", R2Plus1D18)
    register("r3d-18", R3D18)


@hookimpl
def register_objectives(register: Register) -> None:
    register("temporal-contrast", TemporalContrast)


@hookimpl
def register_datasources(register: Register) -> None:
    register("video-files", VideoFiles)
    register("frame-folders", FrameFolders)
    register("frame-arrays", FrameArrays)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("video-retrieval", VideoRetrieval)


@hookimpl
def render_items(source: DataSource, indices: list[int]) -> list[str] | None:
    """Frames, clips and videos in a report: the frame (a clip's or a video's middle one) as a thumbnail."""
    if not isinstance(source, VideoSource):
        return None
    from toolkit.reporting import image_html

    return [image_html(source.thumbnail(index)) for index in indices]
