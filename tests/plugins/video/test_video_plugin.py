"""The video plugin: temporal sampler, PyAV decoding, sources, augmentation, encoders, objective
and same-video retrieval (issue 6).

Every test writes its own small videos, frame folders or frame arrays; the DAVIS tests skip
without ``../shared``.
"""

from __future__ import annotations

from typing import Any, Callable

import av
import numpy as np
import pytest
import torch
from torchvision.io import write_png

from selfsup_video.augmentations import TemporalAugmentation
from selfsup_video.datasources import FrameArrays, FrameFolders, VideoFiles
from selfsup_video.encoders import FrameEncoder, R2Plus1D18, R3D18
from selfsup_video.objectives import TemporalContrast
from selfsup_video.retrieval import VideoRetrieval, same_video_retrieval
from selfsup_video.sampling import TemporalSampler
from selfsup_video.videoio import probe, read_frames, write_video
from selfsup_video.videos import FrameArray, VideoFile
from toolkit.errors import RecipeError
from toolkit.interfaces import Batch, Encoder
from toolkit.losses import nt_xent
from toolkit.plugins import default_plugins
from toolkit.projectors import IdentityProjector, MLPProjector
from toolkit.recipe import build, load_and_resolve
from toolkit.testing import check_augmentation, check_datasource, check_encoder, check_factory_schema, check_objective

from conftest import RECIPES, SHARED_DATA, needs_shared_data

DAVIS = SHARED_DATA / "davis2016_val" / "davis2016_val_72x128.npz"
SIMCLR_16 = {"name": "simclr", "size": 16, "n_views": 1}
"""One SimCLR view of 16 px: the frame augmentation of the tests."""
PLAIN_8 = {**SIMCLR_16, "size": 8, "scale": [1.0, 1.0], "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0,
           "flip_prob": 0.0, "eval_crop_fraction": 1.0}
"""One 8 px view with nothing random: the whole frame, resized."""


def built(kind: str, block: dict[str, Any]) -> Callable[[], Any]:
    """A factory building ``block`` as a recipe does (nested blocks by name), for the conformance kit."""
    return lambda: build(default_plugins(), kind, block)


def temporal(frames: dict[str, Any] = SIMCLR_16, **params: Any) -> TemporalAugmentation:
    """The ``temporal`` augmentation over ``frames``, built from its recipe block."""
    return build(default_plugins(), "augmentation", {"name": "temporal", "frames": frames, **params})


def frame_encoder(width: int = 4) -> FrameEncoder:
    """``frame-encoder`` over a ResNet-18 of ``width``, built from its recipe block."""
    frames = {"name": "resnet18", "width": width}
    return build(default_plugins(), "encoder", {"name": "frame-encoder", "frames": frames})


def ramp_frames(count: int, height: int = 16, width: int = 24, step: int = 8) -> np.ndarray:
    """uint8 ``(count, H, W, 3)``: frame ``i`` is a solid grey of intensity ``i * step``."""
    return np.broadcast_to((np.arange(count) * step).astype(np.uint8)[:, None, None, None],
                           (count, height, width, 3)).copy()


def ramp_video(count: int) -> FrameArray:
    return FrameArray("ramp", ramp_frames(count), 0, count, native_fps=24.0)


def write_frame_arrays(path, lengths, height: int = 16, width: int = 24):
    """An npz in the DAVIS layout; video ``v`` is a noisy colour of its own with a moving square."""
    generator = np.random.default_rng(0)
    videos = []
    for v, length in enumerate(lengths):
        colour = generator.integers(0, 256, 3)
        frames = np.clip(colour + generator.normal(0, 10, (length, height, width, 3)), 0, 255).astype(np.uint8)
        for t in range(length):
            frames[t, 2:6, (2 * t) % (width - 4):(2 * t) % (width - 4) + 4] = 255
        videos.append(frames)
    np.savez(path, frames=np.concatenate(videos), offsets=np.cumsum([0, *lengths]),
             seq_names=np.array([f"v{v}" for v in range(len(lengths))]), fps=np.array(24))
    return path


# the temporal sampler

def test_interval_distribution_matches_the_cvrl_formula():
    sampler = TemporalSampler(max_interval=6, min_interval=1, power=1.0)
    expected = torch.tensor([0, 6, 5, 4, 3, 2, 1], dtype=torch.float64) / 21
    assert torch.allclose(sampler.interval_probabilities(50), expected)
    torch.manual_seed(0)
    draws = torch.tensor([b - a for a, b in (sampler.sample(50) for _ in range(20000))])
    histogram = torch.bincount(draws, minlength=7).double() / len(draws)
    assert (histogram - expected).abs().max() < 0.015


def test_power_zero_is_uniform_and_higher_powers_favour_short_intervals():
    uniform = TemporalSampler(max_interval=4, min_interval=0, power=0.0).interval_probabilities(100)
    assert torch.allclose(uniform, torch.full((5,), 0.2, dtype=torch.float64))
    linear = TemporalSampler(max_interval=4, power=1.0).interval_probabilities(100)
    squared = TemporalSampler(max_interval=4, power=2.0).interval_probabilities(100)
    assert squared[1] > linear[1] and squared[4] < linear[4]


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 8, 9, 40])
def test_both_clips_always_lie_inside_the_video(num_frames):
    sampler = TemporalSampler(max_interval=10, min_interval=2, clip_length=4, frame_step=2)
    torch.manual_seed(0)
    for _ in range(300):
        first, second = sampler.sample(num_frames)
        d = second - first
        top = min(10, max(num_frames - sampler.span, 0))
        assert 0 <= first <= second and min(2, top) <= d <= top
        if num_frames >= sampler.span:
            assert second + sampler.span - 1 <= num_frames - 1
        assert all(0 <= i < num_frames for i in sampler.clip(second, num_frames))


def test_a_short_video_clips_the_largest_interval_to_what_fits():
    probabilities = TemporalSampler(max_interval=30, clip_length=2).interval_probabilities(6)
    assert len(probabilities) == 5 and probabilities[0] == 0  # D = 6 - 2 = 4 frames, d >= 1
    assert torch.allclose(probabilities[1:], torch.tensor([4.0, 3, 2, 1], dtype=torch.float64) / 10)


def test_a_single_frame_video_gives_both_views_from_frame_zero():
    sampler = TemporalSampler(max_interval=5)
    torch.manual_seed(0)
    assert {sampler.sample(1) for _ in range(20)} == {(0, 0)}


def test_a_video_shorter_than_a_clip_repeats_its_last_frame():
    sampler = TemporalSampler(max_interval=5, clip_length=4, frame_step=2)
    assert sampler.sample(3) == (0, 0)
    assert sampler.clip(0, 3) == [0, 2, 2, 2]


def test_far_negatives_lie_at_least_the_margin_away_or_as_far_as_possible():
    sampler = TemporalSampler(max_interval=3)
    torch.manual_seed(0)
    starts = {sampler.far_start(20, anchor=8, margin=6) for _ in range(400)}
    assert starts == {0, 1, 2} | set(range(14, 20))
    assert sampler.far_start(10, anchor=3, margin=8) == 9  # nothing 8 away: the farthest frame
    assert sampler.far_start(1, anchor=0, margin=8) == 0


def test_sampling_follows_the_torch_seed():
    sampler = TemporalSampler(max_interval=20)
    torch.manual_seed(5)
    first = [sampler.sample(100) for _ in range(10)]
    torch.manual_seed(5)
    assert [sampler.sample(100) for _ in range(10)] == first


# decoding with PyAV

@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm", ".mkv"])
def test_decoded_video_round_trip_by_random_access(tmp_path, suffix):
    path = write_video(tmp_path / f"ramp{suffix}", ramp_frames(30), fps=24)
    index = probe(path)
    assert index.num_frames == 30 and index.fps == pytest.approx(24) and (index.height, index.width) == (16, 24)
    wanted = [29, 3, 17, 3, 0, 12]  # any order, repeats, both ends
    frames = read_frames(index, wanted)
    assert frames.shape == (6, 16, 24, 3)
    intensities = torch.from_numpy(frames).float().mean(dim=(1, 2, 3))
    assert (intensities - torch.tensor(wanted) * 8.0).abs().max() < 3.5  # codec error, far below the step of 8


def test_frame_rate_and_resolution_control(tmp_path):
    index = probe(write_video(tmp_path / "ramp.mp4", ramp_frames(30), fps=24))
    video = VideoFile(index, fps=12, short_side=8)
    assert video.num_frames == 15 and video.native_index(7) == 14
    frames = video.frames([7, 14])
    assert frames.shape == (2, 3, 8, 12) and frames.dtype == torch.uint8
    assert (frames.float().mean(dim=(1, 2, 3)) - torch.tensor([14 * 8.0, 28 * 8.0])).abs().max() < 3.5


def test_a_corrupt_video_error_names_the_file(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="broken.mp4: not a readable video file"):
        VideoFiles(path=tmp_path)


def test_a_file_without_a_video_stream_is_named(tmp_path):
    with av.open(str(tmp_path / "sound.mkv"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(ValueError, match="sound.mkv: the file has no video stream"):
        VideoFiles(path=tmp_path)


# data sources

def test_frame_arrays_split_every_video_in_time(tmp_path):
    path = write_frame_arrays(tmp_path / "videos.npz", [10, 5, 1])
    train = check_datasource(FrameArrays, {"path": path, "split": "train", "unit": "frame"})
    test = check_datasource(FrameArrays, {"path": path, "split": "test", "unit": "frame"})
    # cut = round(0.7 * length), at least 1: 7 of 10, 4 of 5 (round half to even), and the 1-frame video
    assert train.frame_times.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 0]
    assert train.video_ids.tolist() == [0] * 7 + [1] * 4 + [2]
    assert test.video_ids.tolist() == [0, 0, 0, 1] and test.frame_times.tolist() == [7, 8, 9, 4]
    assert torch.equal(test.labels, test.video_ids) and test.num_classes == 3
    assert train[0].shape == (3, 16, 24) and train[0].dtype == torch.uint8
    videos = FrameArrays(path=path, split="all")
    assert len(videos) == 3 and [v.num_frames for v in (videos[0], videos[1], videos[2])] == [10, 5, 1]


def test_frame_and_clip_units_give_the_frames_of_their_time(tmp_path):
    np.savez(tmp_path / "ramp.npz", frames=ramp_frames(10), offsets=np.array([0, 10]))
    frames = FrameArrays(path=tmp_path / "ramp.npz", split="test", unit="frame", train_fraction=0.5)
    assert [int(frames[i][0, 0, 0]) for i in range(len(frames))] == [40, 48, 56, 64, 72]
    clips = FrameArrays(path=tmp_path / "ramp.npz", split="test", unit="clip", clip_length=4, clip_step=2,
                        frame_stride=2, train_fraction=0.5)
    assert clips.frame_times.tolist() == [5, 7, 9]
    first, last = clips[0], clips[2]
    assert first.shape == (4, 3, 16, 24)
    assert first[:, 0, 0, 0].tolist() == [40, 40, 40, 56]  # frames 5 + (-4, -2, 0, 2), clamped to the split
    assert last[:, 0, 0, 0].tolist() == [40, 56, 72, 72]  # frames 9 + (-4, -2, 0, 2)


def test_frame_folders_read_sorted_frames_with_class_folders(tmp_path):
    for c, name in enumerate(["cats", "dogs"]):
        for v in range(2):
            folder = tmp_path / name / f"video{v}"
            folder.mkdir(parents=True)
            for t in range(4):
                write_png(torch.full((3, 8, 8), 40 * c + 10 * t, dtype=torch.uint8), str(folder / f"{t:05d}.png"))
    source = check_datasource(FrameFolders, {"path": tmp_path, "split": "all", "unit": "frame", "label": "class"})
    assert source.class_names == ["cats", "dogs"] and source.labels.tolist() == [0] * 8 + [1] * 8
    assert source.video_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert [int(source[i][0, 0, 0]) for i in range(4, 8)] == [0, 10, 20, 30]


def test_video_files_use_split_folders_whole_and_class_folders_as_labels(tmp_path):
    for split, count in [("train", 2), ("test", 1)]:
        for name in ["jump", "run"]:
            (tmp_path / split / name).mkdir(parents=True)
            for v in range(count):
                write_video(tmp_path / split / name / f"{v}.mp4", ramp_frames(6 + v), fps=24)
    train = check_datasource(VideoFiles, {"path": tmp_path, "split": "train", "label": "class"})
    assert [train[i].num_frames for i in range(4)] == [6, 7, 6, 7] and train.labels.tolist() == [0, 0, 1, 1]
    test = VideoFiles(path=tmp_path, split="test", unit="frame", label="class")
    assert len(test) == 12 and test.labels.tolist() == [0] * 6 + [1] * 6


def test_label_class_without_classes_says_what_to_do(tmp_path):
    write_frame_arrays(tmp_path / "videos.npz", [4, 4])
    with pytest.raises(ValueError, match="label: video"):
        FrameArrays(path=tmp_path / "videos.npz", label="class")


def test_a_missing_frame_array_file_names_the_key_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path"):
        FrameArrays(path=tmp_path / "nowhere.npz")


@needs_shared_data
def test_davis_frames_split_in_time_cover_every_frame_once():
    train = check_datasource(FrameArrays, {"path": DAVIS, "split": "train", "unit": "frame"})
    test = check_datasource(FrameArrays, {"path": DAVIS, "split": "test", "unit": "frame"})
    assert len(train) + len(test) == 1376 and train.num_classes == 20
    assert set(test.video_ids.tolist()) == set(range(20)) and train[0].shape == (3, 72, 128)
    videos = FrameArrays(path=DAVIS, split="train")
    assert videos.names[0] == "blackswan" and videos[0].num_frames == 35  # 70% of 50 frames


# the augmentation

@pytest.mark.parametrize("params", [
    {"max_interval": 4},
    {"max_interval": 4, "clip_length": 3, "frame_step": 2},
    {"max_interval": 4, "clip_length": 3, "consistent": False, "tcn_margin": 6},
])
def test_temporal_augmentation_conforms(params):
    views = check_augmentation(built("augmentation", {"name": "temporal", "frames": SIMCLR_16, **params}), {},
                               ramp_video(20))
    expected = (3, 16, 16) if "clip_length" not in params else (3, 3, 16, 16)
    assert all(view.shape == expected and view.dtype == torch.float32 for view in views)


def test_views_come_from_frames_at_most_max_interval_apart_and_negatives_beyond_the_margin():
    augmentation = temporal(PLAIN_8, max_interval=3, tcn_margin=5)
    torch.manual_seed(0)
    for _ in range(50):
        anchor, positive, negative = (round(float(view.mean()) * 255 / 8) for view in augmentation(ramp_video(30)))
        assert 1 <= abs(positive - anchor) <= 3 and abs(negative - anchor) >= 5


def test_consistent_clips_share_one_spatial_draw_and_inconsistent_ones_do_not():
    # a clip of one random still frame: a shared crop, flip and colour draw gives identical frames
    frames = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3), dtype=np.uint8), 10, axis=0)
    video = FrameArray("still", frames, 0, 10, native_fps=24.0)
    torch.manual_seed(0)
    same = temporal(clip_length=4, max_interval=2)(video)[0]
    different = temporal(clip_length=4, max_interval=2, consistent=False)(video)[0]
    assert same.shape == different.shape == (3, 4, 16, 16)
    assert all(torch.equal(same[:, t], same[:, 0]) for t in range(4))
    assert not all(torch.equal(different[:, t], different[:, 0]) for t in range(4))


def test_consistent_clips_crop_every_frame_of_a_moving_square_at_the_same_place():
    # a 4 px square moving 1 px right per frame, always inside the 60%-area crop: with one crop box
    # per clip its centre keeps one row and moves by one constant (scaled) step; per-frame boxes do not
    frames = np.zeros((8, 48, 48, 3), dtype=np.uint8)
    for t in range(8):
        frames[t, 22:26, 18 + t:22 + t] = 255
    video = FrameArray("moving", frames, 0, 8, native_fps=24.0)
    spatial = {**PLAIN_8, "size": 32, "scale": [0.6, 0.6], "flip_prob": 0.5}
    grid = torch.arange(32, dtype=torch.float32)

    def centres(clip):  # (T, 32, 32) -> rows (T,), columns (T,)
        mass = clip.sum(dim=(1, 2))
        return (clip.sum(dim=2) * grid).sum(dim=1) / mass, (clip.sum(dim=1) * grid).sum(dim=1) / mass

    torch.manual_seed(0)
    for consistent in (True, False):
        augmentation = temporal(spatial, clip_length=4, max_interval=2, consistent=consistent)
        steady = []
        for _ in range(10):
            rows, columns = centres(augmentation(video)[0][0])
            steps = columns.diff()
            steady.append(bool((rows - rows[0]).abs().max() < 0.01 and (steps - steps[0]).abs().max() < 0.2
                               and steps.abs().min() > 0.5))  # resampling moves a centre by < 0.1 px
        assert all(steady) if consistent else not any(steady)


def test_eval_transform_handles_frames_clips_and_whole_videos():
    frames_aug = temporal(PLAIN_8)
    clips_aug = temporal(PLAIN_8, clip_length=4)
    assert frames_aug.eval_transform(torch.zeros(3, 16, 24, dtype=torch.uint8)).shape == (3, 8, 8)
    assert clips_aug.eval_transform(torch.zeros(4, 3, 16, 24, dtype=torch.uint8)).shape == (3, 4, 8, 8)
    assert frames_aug.eval_transform(ramp_video(11)).mean() == pytest.approx(5 * 8 / 255)  # the middle frame
    assert clips_aug.eval_transform(ramp_video(11)).mean(dim=(0, 2, 3)).mul(255 / 8).round().tolist() == [3, 4, 5, 6]


def test_a_clip_is_evaluated_as_each_of_its_frames():
    augmentation = temporal(SIMCLR_16, clip_length=4)
    clip = torch.randint(0, 256, (4, 3, 20, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    per_frame = torch.stack([augmentation.frames.eval_transform(frame) for frame in clip], dim=1)
    assert torch.allclose(augmentation.eval_transform(clip), per_frame, atol=1e-6)


def test_training_on_single_frames_asks_for_unit_video():
    with pytest.raises(TypeError, match="unit: video"):
        temporal()(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_a_tcn_margin_within_the_positive_range_is_refused():
    with pytest.raises(RecipeError, match="tcn_margin .* must exceed augmentation.max_interval"):
        temporal(max_interval=8, tcn_margin=8)


@pytest.mark.parametrize("frames, hint", [
    ({**SIMCLR_16, "n_views": 2}, "frames.n_views must be 1.* makes 2; set augmentation.frames.n_views: 1"),
    ({**SIMCLR_16, "local_crops": 2}, "augmentation.frames.n_views must be 1.* makes 3; .*local_crops: 0"),
    ({**SIMCLR_16, "device": "batch"}, "augmentation.frames .* whole batches.* augmentation.frames.device: cpu"),
])
def test_a_frame_augmentation_making_more_than_one_view_per_call_is_refused(frames, hint):
    with pytest.raises(RecipeError, match=hint):
        temporal(frames)


def test_the_frame_augmentation_defaults_to_one_simclr_view_of_112_pixels(plugins):
    recipe = load_and_resolve(RECIPES / "tiny" / "temporal.yaml", ["augmentation={name: temporal}"], plugins)
    frames = recipe.block("augmentation")["frames"]
    assert (frames["name"], frames["size"], frames["n_views"]) == ("simclr", 112, 1)


# encoders

FRAMES = [torch.rand(3, 16, 16) for _ in range(3)]
CLIPS = [torch.rand(3, 4, 16, 16) for _ in range(3)]


@pytest.mark.parametrize("factory, params, example", [
    (built("encoder", {"name": "frame-encoder", "frames": {"name": "resnet18", "width": 4}}), {}, FRAMES),
    (built("encoder", {"name": "frame-encoder", "frames": {"name": "resnet18", "width": 4, "stem": "cifar"}}), {},
     CLIPS),
    (R2Plus1D18, {"width": 4}, CLIPS),
    (R3D18, {"width": 4}, CLIPS),
])
def test_video_encoders_conform(factory, params, example):
    check_encoder(factory, params, example)


def test_frame_encoder_encodes_a_clip_as_the_mean_of_its_frames():
    torch.manual_seed(0)
    encoder = frame_encoder().eval()
    clip = torch.rand(2, 3, 5, 16, 16)
    with torch.no_grad():
        per_frame = torch.stack([encoder(clip[:, :, t]) for t in range(5)], dim=1).mean(dim=1)
        assert torch.allclose(encoder(clip), per_frame, atol=1e-6)


def test_frame_encoder_takes_any_image_encoder_by_name_and_its_output_dim(plugins):
    recipe = load_and_resolve(RECIPES / "tiny" / "temporal.yaml", ["encoder={name: frame-encoder, frames: resnet50}"],
                              plugins)
    assert recipe.block("encoder")["frames"]["name"] == "resnet50"
    encoder = recipe.build("encoder")
    assert type(encoder.frames).__name__ == "ResNet50" and encoder.output_dim == 2048
    assert build(plugins, "encoder", {"name": "frame-encoder"}).output_dim == 512  # resnet18 by default
    assert {name.split(".")[0] for name in encoder.state_dict()} == {"frames"}


def test_a_misspelled_frame_encoder_key_is_named_with_file_and_line(plugins, tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(f"extends: {RECIPES / 'tiny' / 'temporal.yaml'}\n"
                      "encoder:\n  name: frame-encoder\n  frames: {name: resnet18, widht: 4}\n")
    with pytest.raises(RecipeError, match=r"typo.yaml:4: encoder\.frames\.widht: unknown key; did you mean 'width'"):
        load_and_resolve(recipe, [], plugins)
    with pytest.raises(RecipeError, match=r"encoder\.frames\.name: no encoder named 'resnt18'"):
        load_and_resolve(recipe, ["encoder.frames={name: resnt18}"], plugins)


def test_a_sequence_encoder_per_frame_is_refused(plugins):
    with pytest.raises(RecipeError, match="encoder.frames must give one vector per frame"):
        build(plugins, "encoder", {"name": "frame-encoder", "frames": {"name": "cpc-audio", "pooling": "sequence"}})


def test_clip_encoders_have_torchvision_layouts_at_width_64():
    torch.manual_seed(0)
    assert sum(p.numel() for p in R2Plus1D18().parameters()) == 31_505_325 - 512 * 400 - 400  # without fc
    assert R3D18(width=8).output_dim == 64


def test_clip_encoders_refuse_frames_and_say_what_to_set():
    with pytest.raises(ValueError, match="augmentation.clip_length"):
        R3D18(width=4)(torch.rand(2, 3, 16, 16))


def test_clip_encoder_loads_a_local_state_dict_and_refuses_another_width(tmp_path):
    torch.manual_seed(0)
    source = R2Plus1D18(width=4).eval()
    torch.save(source.net.state_dict(), tmp_path / "r2plus1d.pth")
    loaded = R2Plus1D18(width=4, weights=tmp_path / "r2plus1d.pth").eval()
    clip = torch.rand(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(source(clip), loaded(clip))
    with pytest.raises(ValueError, match="does not fit this r2plus1d-18"):
        R2Plus1D18(width=8, weights=tmp_path / "r2plus1d.pth")


# the objective

class LinearEncoder(Encoder):
    """A linear map of flattened inputs: the objective's math is checked against it."""

    output_dim = 5

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(12, 5)

    def forward(self, x):
        return self.linear(x.flatten(1))


def naive_info_nce(query, candidates, positive_index, temperature):
    q = torch.nn.functional.normalize(query, dim=0)
    c = torch.nn.functional.normalize(candidates, dim=1)
    logits = c @ q / temperature
    return -(logits[positive_index] - torch.logsumexp(logits, dim=0))


@pytest.mark.parametrize("tcn_weight", [0.0, 0.5])
def test_temporal_contrast_matches_a_naive_loop(tcn_weight):
    torch.manual_seed(0)
    n, temperature = 4, 0.2
    encoder, projector = LinearEncoder(), IdentityProjector(input_dim=5)
    views = [torch.randn(n, 12) for _ in range(3 if tcn_weight else 2)]
    loss = TemporalContrast(temperature, tcn_weight)(Batch(views=views, index=torch.arange(n)), encoder, projector).loss
    with torch.no_grad():
        z = [encoder(v) for v in views]
        everything = torch.cat([z[0], z[1]])
        terms = []
        for a in range(2 * n):
            others = [b for b in range(2 * n) if b != a]
            terms.append(naive_info_nce(everything[a], everything[others], others.index((a + n) % (2 * n)),
                                        temperature))
        expected = torch.stack(terms).mean()
        if tcn_weight:
            candidates = torch.cat([z[1], z[2]])
            tcn = torch.stack([naive_info_nce(z[0][i], candidates, i, temperature) for i in range(n)]).mean()
            expected = expected + tcn_weight * tcn
    assert torch.allclose(loss, expected, atol=1e-5)


def test_without_the_tcn_term_the_loss_is_simclr_nt_xent_of_the_two_times():
    torch.manual_seed(0)
    encoder, projector = LinearEncoder(), IdentityProjector(input_dim=5)
    views = [torch.randn(4, 12), torch.randn(4, 12)]
    output = TemporalContrast(0.1)(Batch(views=views, index=torch.arange(4)), encoder, projector)
    expected, accuracy = nt_xent(torch.stack([encoder(v) for v in views]), 0.1)
    assert torch.allclose(output.loss, expected) and output.metrics["contrastive_acc"] == accuracy


@pytest.mark.parametrize("tcn_weight, views", [(0.0, 2), (1.0, 3)])
def test_temporal_contrast_conforms(tcn_weight, views):
    torch.manual_seed(0)
    encoder = frame_encoder()
    projector = MLPProjector(encoder.output_dim, hidden_dim=8, output_dim=4)
    batch = Batch(views=[torch.rand(4, 3, 16, 16) for _ in range(views)], index=torch.arange(4))
    output = check_objective(TemporalContrast, {"tcn_weight": tcn_weight}, batch, encoder, projector)
    assert ("far_negative_acc" in output.metrics) == (tcn_weight > 0)


@pytest.mark.parametrize("tcn_weight, views, hint", [(1.0, 2, "augmentation.tcn_margin"), (0.0, 3, "tcn_weight > 0")])
def test_a_view_count_that_does_not_fit_the_tcn_setting_says_what_to_set(tcn_weight, views, hint):
    batch = Batch(views=[torch.randn(2, 12) for _ in range(views)], index=torch.arange(2))
    with pytest.raises(ValueError, match=hint):
        TemporalContrast(tcn_weight=tcn_weight)(batch, LinearEncoder(), IdentityProjector(input_dim=5))


# same-video retrieval

def test_retrieval_matches_a_hand_computed_example_with_the_exclusion_window():
    # video 0 at times 0, 1, 5; video 1 at times 0, 9. Features on a circle (cosine = angle order).
    angles = torch.tensor([0.0, 0.1, 1.5, 0.25, 1.4])
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    video_ids, times = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 5, 0, 9])
    top1, mean_ap, queries = same_video_retrieval(features, video_ids, times, exclude_window=1)
    # q0: frame 1 excluded (|1 - 0| <= 1); ranked: item 3 (v1), 4 (v1), 2 (v0) -> top1 0, AP 1/3
    # q1: item 0 excluded; ranked: 3 (v1), 4 (v1), 2 (v0) -> 0, 1/3
    # q2: ranked: 4 (v1), 3 (v1), 1 (v0), 0 (v0) -> 0, (1/3 + 2/4) / 2
    # q3: ranked: 1 (v0), 0 (v0), 4 (v1), 2 (v0) -> 0, 1/3
    # q4: ranked: 2 (v0), 3 (v1), 1, 0 -> 0, 1/2
    assert queries == 5 and top1 == 0.0
    assert mean_ap == pytest.approx((1 / 3 + 1 / 3 + (1 / 3 + 2 / 4) / 2 + 1 / 3 + 1 / 2) / 5)
    top1, mean_ap, _ = same_video_retrieval(features, video_ids, times, exclude_window=0)
    # now q0 finds frame 1 first (AP (1 + 2/4) / 2), q1 finds frame 0 first (AP (1 + 2/4) / 2)
    assert top1 == pytest.approx(2 / 5)


def test_queries_without_a_same_video_frame_outside_the_window_are_left_out():
    features = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    video_ids, times = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 10, 20, 0, 2])  # video 1: all within 5
    assert same_video_retrieval(features, video_ids, times, exclude_window=5)[2] == 3
    with pytest.raises(ValueError, match="lower exclude_window"):
        same_video_retrieval(features, video_ids, times, exclude_window=20)


def test_retrieval_on_whole_videos_asks_for_frame_units(tmp_path):
    class Context:
        def source(self, role):
            return FrameArrays(path=write_frame_arrays(tmp_path / "videos.npz", [4, 4]), split="test")

    with pytest.raises(ValueError, match="eval.test_data.unit: frame"):
        VideoRetrieval().evaluate(Context())


def test_retrieval_evaluator_schema_conforms():
    check_factory_schema("evaluator", VideoRetrieval)
