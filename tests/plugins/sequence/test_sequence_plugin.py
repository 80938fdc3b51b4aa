"""The sequence plugin: CPC encoders, objective, augmentations and data sources (issue 5).

The ``plugins`` fixture (conftest) discovers the installed entry points, ``sequence`` among them.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from selfsup_sequence.augmentations import CPCAudioAugmentation, CPCSeriesAugmentation
from selfsup_sequence.datasources import FSDD, AudioFolder, read_audio, ucr_npz, ucr_ts
from selfsup_sequence.encoders import CPCAudioEncoder, CPCSeriesEncoder, pad_with_nan
from selfsup_sequence.objectives import CPC, cpc_info_nce, sample_negatives
from selfsup_sequence.series import series_file
from toolkit import load_encoder, load_eval_transform
from toolkit.engine import Trainer
from toolkit.interfaces import Batch
from toolkit.projectors import IdentityProjector
from toolkit.recipe import load_and_resolve
from toolkit.testing import check_augmentation, check_datasource, check_encoder, check_objective

from conftest import RECIPES, SHARED_DATA, needs_shared_data
from helpers import assert_same_state, kill_at, write_wav

TINY_AUDIO = {"channels": 8, "hidden_dim": 8}
TINY_SERIES = {"channels": 8, "hidden_dim": 8}


# encoders

def test_audio_encoder_has_the_paper_receptive_field_and_hop():
    encoder = CPCAudioEncoder(frontend="waveform", **TINY_AUDIO)
    assert (encoder.receptive_field, encoder.hop) == (465, 160)
    assert encoder.output_length(20480) == 126


@pytest.mark.parametrize("length", [465, 624, 625, 1000, 20480])
def test_audio_encoder_output_length_matches_the_formula(length):
    encoder = CPCAudioEncoder(frontend="waveform", **TINY_AUDIO)
    z = encoder.encode(torch.zeros(2, 1, length))
    assert z.shape == (2, (length - 465) // 160 + 1, 8)


def test_series_encoder_with_custom_stack_reports_its_geometry():
    encoder = CPCSeriesEncoder(in_channels=3, kernels=[5, 3], strides=[3, 2], **TINY_SERIES)
    assert (encoder.receptive_field, encoder.hop) == (1 + 4 + 2 * 3, 6)
    assert encoder.encode(torch.randn(2, 3, 47)).shape == (2, (47 - 11) // 6 + 1, 8)


def test_input_shorter_than_the_receptive_field_gives_one_finite_frame():
    encoder = CPCAudioEncoder(**TINY_AUDIO).eval()
    assert encoder.encode(torch.randn(1, 1, 100)).shape == (1, 1, 8)
    assert torch.isfinite(encoder(torch.randn(1, 1, 100))).all()


@pytest.mark.parametrize("context", ["gru", "lstm", "transformer"])
def test_context_at_t_does_not_see_the_future(context):
    torch.manual_seed(0)
    encoder = CPCSeriesEncoder(context=context, pooling="sequence", standardize=False, **TINY_SERIES).eval()
    x = torch.randn(2, 1, 60)
    changed = x.clone()
    t = 10  # frame t sees samples up to t * hop + receptive_field - 1
    changed[:, :, t * encoder.hop + encoder.receptive_field:] += 5.0
    with torch.no_grad():
        c, c_changed = encoder(x), encoder(changed)
    assert torch.allclose(c[:, : t + 1], c_changed[:, : t + 1], atol=1e-6)
    assert not torch.allclose(c[:, t + 1:], c_changed[:, t + 1:])


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_a_padded_item_gets_the_features_it_gets_alone(pooling):
    torch.manual_seed(0)
    encoder = CPCSeriesEncoder(pooling=pooling, **TINY_SERIES).eval()
    short, long = torch.randn(1, 40), torch.randn(1, 90)
    with torch.no_grad():
        together = encoder(pad_with_nan([long, short]))
        alone = encoder(short[None])
    assert torch.allclose(together[1], alone[0], atol=1e-5)


@pytest.mark.parametrize("params", [
    {"pooling": "mean+std", "features": "both"},
    {"pooling": "mean", "frontend": "log-mel", "kernels": [3, 3], "strides": [1, 1]},
    {"pooling": "mean+std", "frontend": "log-mel", "kernels": [3, 3], "strides": [1, 2], "features": "local"},
    {"mean_norm": True},
])
def test_a_padded_recording_gets_the_features_it_gets_alone(params):
    torch.manual_seed(0)
    encoder = CPCAudioEncoder(sample_rate=8000, **TINY_AUDIO, **params).eval()
    short, long = torch.randn(1, 2400), torch.randn(1, 5000)
    with torch.no_grad():
        together = encoder(pad_with_nan([long, short]))
        alone = encoder(short[None])
    assert together.shape == (2, encoder.output_dim)
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_log_mel_front_end_matches_torchaudio():
    torchaudio = pytest.importorskip("torchaudio")
    encoder = CPCAudioEncoder(sample_rate=8000, frontend="log-mel", n_mels=40, kernels=[3], strides=[1],
                              **TINY_AUDIO)
    x = torch.randn(2, 1, 4000)
    reference = torchaudio.transforms.MelSpectrogram(8000, n_fft=200, hop_length=80, n_mels=40, center=False)
    assert torch.allclose(encoder.frontend(x), torch.log(reference(x[:, 0]) + 1e-6), atol=1e-5)
    assert encoder.output_length(4000) == (4000 - 200) // 80 + 1 - 2  # 48 spectrogram frames, kernel 3
    assert not any("frontend" in key for key in encoder.state_dict())  # computed, not saved


def test_mean_norm_centres_every_mel_band_over_the_valid_frames():
    encoder = CPCAudioEncoder(sample_rate=8000, mean_norm=True, **TINY_AUDIO)
    x = pad_with_nan([torch.randn(1, 4000), torch.randn(1, 2000)])
    lengths = torch.tensor([4000, 2000])
    bands = encoder.frontend(torch.nan_to_num(x), lengths)  # (2, 40, 48)
    frames = encoder.frontend.frames(lengths)
    assert frames.tolist() == [48, 23]
    for i, count in enumerate(frames.tolist()):
        assert torch.allclose(bands[i, :, :count].mean(dim=1), torch.zeros(40), atol=1e-4)
        assert bands[i, :, count:].abs().sum() == 0


def test_mean_norm_without_the_log_mel_front_end_is_refused():
    with pytest.raises(ValueError, match="frontend: log-mel"):
        CPCAudioEncoder(frontend="waveform", mean_norm=True, **TINY_AUDIO)


def test_mean_std_pooling_of_both_features():
    torch.manual_seed(0)
    encoder = CPCSeriesEncoder(pooling="mean+std", features="both", **TINY_SERIES).eval()
    x = torch.randn(3, 1, 50)
    with torch.no_grad():
        z = encoder.encode(x)
        frames = torch.cat([z, encoder.context(z)], dim=-1)
        expected = torch.cat([frames.mean(dim=1), frames.std(dim=1, unbiased=False)], dim=-1)
        assert torch.allclose(encoder(x), expected, atol=1e-5)
    assert encoder.output_dim == 2 * (8 + 8)


@pytest.mark.parametrize("factory, params, example", [
    (CPCAudioEncoder, {**TINY_AUDIO, "pooling": "sequence"}, [torch.randn(1, 1200), torch.randn(1, 900)]),
    (CPCAudioEncoder, TINY_AUDIO, [torch.randn(1, 1200), torch.randn(1, 900)]),
    (CPCSeriesEncoder, {"in_channels": 6, "context": "transformer", **TINY_SERIES}, [torch.randn(6, 50)] * 3),
    (CPCAudioEncoder, {**TINY_AUDIO, "frontend": "log-mel", "kernels": [3], "strides": [1], "pooling": "mean+std"},
     [torch.randn(1, 3000), torch.randn(1, 2000)]),
])
def test_encoders_conform(factory, params, example):
    check_encoder(factory, params, example)


def test_encoder_names_the_channel_mismatch():
    with pytest.raises(ValueError, match="in_channels"):
        CPCSeriesEncoder(in_channels=1, **TINY_SERIES).encode(torch.randn(2, 6, 50))


# objective

@pytest.mark.parametrize("pool_size", [11, 50])  # scored densely (11 <= M * D = 12), gathered (50)
def test_cpc_loss_matches_a_naive_loop(pool_size):
    torch.manual_seed(0)
    n, steps, hidden, dim, count, k_max = 2, 7, 5, 4, 3, 3
    c, z = torch.randn(n, steps, hidden), torch.randn(n, steps, dim)
    pool = torch.randn(pool_size, dim)
    index = torch.randint(0, pool_size, (n, steps, count))
    predictors = [torch.nn.Linear(hidden, dim, bias=False) for _ in range(k_max)]
    loss, accuracies = cpc_info_nce(c, z, pool, predictors, index)
    per_step, hits = [], []
    for k in range(1, k_max + 1):
        terms, correct = [], []
        for i in range(n):
            for t in range(steps - k):
                p = predictors[k - 1].weight @ c[i, t]
                scores = torch.stack([p @ z[i, t + k]] + [p @ pool[j] for j in index[i, t + k]])
                terms.append(-(scores[0] - torch.logsumexp(scores, dim=0)))
                correct.append(float(scores.argmax() == 0))
        per_step.append(torch.stack(terms).mean())
        hits.append(sum(correct) / len(correct))
    assert torch.allclose(loss, torch.stack(per_step).mean(), atol=1e-5)
    assert torch.allclose(accuracies, torch.tensor(hits))


@pytest.mark.parametrize("source", ["batch", "same_sequence"])
def test_negatives_are_never_the_target_itself(source):
    torch.manual_seed(0)
    index = sample_negatives(torch.full((6,), 5), 5, 200, source)
    own = torch.arange(6)[:, None] * 5 + torch.arange(5)[None, :]
    assert not (index == own[..., None]).any()
    assert index.min() >= 0 and index.max() < 6 * 5
    assert len(index.unique()) == 6 * 5  # with 200 draws per position, every frame serves somewhere
    if source == "same_sequence":
        assert torch.equal(index // 5, torch.arange(6)[:, None, None].expand_as(index))


@pytest.mark.parametrize("source", ["batch", "same_sequence"])
def test_negatives_come_from_valid_frames_only(source):
    torch.manual_seed(0)
    frames, steps = torch.tensor([6, 2, 4]), 6
    index = sample_negatives(frames, steps, 300, source)
    sequence, position = index // steps, index % steps
    assert (position < frames[sequence]).all()  # never a frame of padding
    valid = torch.arange(steps)[None, :] < frames[:, None]
    own = torch.arange(3)[:, None] * steps + torch.arange(steps)[None, :]
    assert not ((index == own[..., None]) & valid[..., None]).any()


def test_padding_frames_are_neither_anchors_nor_targets():
    torch.manual_seed(0)
    n, steps, dim, k_max = 2, 6, 4, 2
    c, z, pool = torch.randn(n, steps, dim), torch.randn(n, steps, dim), torch.randn(12, dim)
    index = torch.randint(0, 12, (n, steps, 3))
    predictors = [torch.nn.Linear(dim, dim, bias=False) for _ in range(k_max)]
    frames = torch.tensor([6, 3])
    loss, _ = cpc_info_nce(c, z, pool, predictors, index, frames)
    changed = z.clone()
    changed[1, 3:] += 100.0  # the second item's padding frames
    assert torch.equal(loss, cpc_info_nce(c, changed, pool, predictors, index, frames)[0])
    per_step = []
    for k in range(1, k_max + 1):  # the mean runs over the valid anchors only
        terms = []
        for i in range(n):
            for t in range(int(frames[i]) - k):
                p = predictors[k - 1].weight @ c[i, t]
                scores = torch.stack([p @ z[i, t + k]] + [p @ pool[j] for j in index[i, t + k]])
                terms.append(torch.logsumexp(scores, dim=0) - scores[0])
        per_step.append(torch.stack(terms).mean())
    assert torch.allclose(loss, torch.stack(per_step).mean(), atol=1e-5)


def test_negative_sampling_follows_the_torch_seed():
    torch.manual_seed(3)
    first = sample_negatives(torch.tensor([6, 6]), 6, 8, "batch")
    torch.manual_seed(3)
    assert torch.equal(first, sample_negatives(torch.tensor([6, 6]), 6, 8, "batch"))


def test_cpc_objective_conforms():
    torch.manual_seed(0)
    encoder = CPCSeriesEncoder(**TINY_SERIES)
    batch = Batch(views=[torch.randn(4, 1, 40)], index=torch.arange(4))
    output = check_objective(CPC, {"prediction_steps": 3, "num_negatives": 5}, batch, encoder,
                             IdentityProjector(input_dim=8))
    assert set(output.metrics) == {"cpc_acc", "cpc_acc_k1", "cpc_acc_k2", "cpc_acc_k3"}


def test_cpc_starts_at_chance_level_log_of_candidates():
    torch.manual_seed(0)
    encoder = CPCSeriesEncoder(**TINY_SERIES)
    objective = CPC(encoder=encoder, prediction_steps=2, num_negatives=15)
    torch.nn.init.zeros_(objective.predictors[0].weight), torch.nn.init.zeros_(objective.predictors[1].weight)
    loss = objective(Batch(views=[torch.randn(4, 1, 40)], index=torch.arange(4)), encoder, None).loss
    assert math.isclose(loss.item(), math.log(16), rel_tol=1e-5)


def test_cpc_names_an_encoder_without_encode_and_context():
    with pytest.raises(TypeError, match="IdentityProjector.*encode"):
        CPC(encoder=IdentityProjector(input_dim=4))


def test_cpc_asks_for_longer_windows_when_there_are_too_few_frames():
    encoder = CPCSeriesEncoder(**TINY_SERIES)  # R = 8, stride 1: 19 steps give 12 frames
    objective = CPC(encoder=encoder, prediction_steps=12)
    with pytest.raises(ValueError, match="augmentation.window"):
        objective(Batch(views=[torch.randn(2, 1, 19)], index=torch.arange(2)), encoder, None)


# augmentations

@pytest.mark.parametrize("factory, params", [
    (CPCAudioAugmentation, {"window": 500, "gain_db": 6.0, "noise_prob": 1.0, "time_mask": 100, "time_mask_prob": 1.0}),
    (CPCSeriesAugmentation, {"window": 30, "jitter": 0.1, "scaling": 0.2}),
])
def test_augmentations_conform_and_make_fixed_windows(factory, params):
    views = check_augmentation(factory, params, torch.randn(2, 900))
    assert views[0].shape == (2, params["window"]) and torch.isfinite(views[0]).all()


def test_a_short_item_is_padded_with_nan_to_the_window():
    view = CPCSeriesAugmentation(window=10)(torch.ones(1, 4))[0]
    assert torch.equal(view[0, :4], torch.ones(4)) and torch.isnan(view[0, 4:]).all()


def test_eval_transform_trims_nan_padding_and_crops_long_items_to_the_centre():
    item = torch.cat([torch.arange(10.0)[None], torch.full((1, 5), math.nan)], dim=1)
    assert torch.equal(CPCSeriesAugmentation().eval_transform(item), torch.arange(10.0)[None])
    assert torch.equal(CPCAudioAugmentation(eval_length=4).eval_transform(item), torch.arange(3.0, 7.0)[None])


# data sources

def test_ts_reader_handles_multichannel_variable_lengths_and_missing_values(tmp_path):
    (tmp_path / "Toy_TRAIN.ts").write_text(
        "# toy\n@problemName Toy\n@univariate false\n@equalLength false\n@classLabel true up down\n@data\n"
        "1,2,3:4,5,6:up\n1,?,3,4:5,6:down\n")
    source = check_datasource(ucr_ts, {"path": tmp_path, "split": "train"})
    assert source[0].shape == (2, 4) and torch.isnan(source[0][:, 3]).all()
    assert torch.isnan(source[1][0, 1]) and torch.isnan(source[1][1, 2:]).all()
    assert source.labels.tolist() == [0, 1] and source.num_classes == 2


def test_ts_folder_with_variants_reads_the_file_named_after_it(tmp_path):
    folder = tmp_path / "Toy"  # aeon ships Toy_TRAIN.ts next to Toy_eq_TRAIN.ts (equal-length variant)
    folder.mkdir()
    (folder / "Toy_TRAIN.ts").write_text("@classLabel true a b\n@data\n1,2,3:a\n")
    (folder / "Toy_eq_TRAIN.ts").write_text("@classLabel true a b\n@data\n1,2,3,4:b\n")
    assert ucr_ts(path=folder, split="train")[0].shape == (1, 3)
    (folder / "Toy_TRAIN.ts").unlink()
    assert ucr_ts(path=folder, split="train")[0].shape == (1, 4)  # the only one left


def test_standardize_scales_every_split_by_the_training_series_per_channel(tmp_path):
    generator = np.random.default_rng(0)
    scale, shift = np.array([1.0, 100.0])[None, :, None], np.array([0.0, -50.0])[None, :, None]
    x_train = (generator.normal(size=(6, 2, 5)) * scale + shift).astype(np.float32)
    x_train[0, :, 3:] = np.nan  # a shorter series: its padding stays padding
    x_test = (generator.normal(size=(4, 2, 5)) * scale + shift).astype(np.float32)
    np.savez(tmp_path / "toy.npz", x_train=x_train, y_train=np.arange(6) % 2, x_test=x_test, y_test=np.arange(4) % 2)
    train = ucr_npz(path=tmp_path / "toy.npz", split="train", standardize=True).series.numpy()
    test = ucr_npz(path=tmp_path / "toy.npz", split="test", standardize=True).series.numpy()
    mean, std = np.nanmean(x_train, axis=(0, 2)), np.nanstd(x_train, axis=(0, 2))
    np.testing.assert_allclose(np.nanmean(train, axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(train, axis=(0, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(test, (x_test - mean[None, :, None]) / std[None, :, None], rtol=1e-5, atol=1e-5)
    assert np.isnan(train[0, :, 3:]).all() and not np.isnan(train[0, :, :3]).any()


def test_standardize_of_ts_folders_and_one_list_files_uses_their_training_series(tmp_path):
    (tmp_path / "Toy").mkdir()
    (tmp_path / "Toy" / "Toy_TRAIN.ts").write_text("@classLabel true a b\n@data\n1,3:a\n5,7:b\n")
    (tmp_path / "Toy" / "Toy_TEST.ts").write_text("@classLabel true a b\n@data\n4,6:a\n")
    test = ucr_ts(path=tmp_path / "Toy", split="test", standardize=True)[0]  # train values 1, 3, 5, 7
    assert test[0].tolist() == pytest.approx([0.0, 2 / math.sqrt(5)])
    np.save(tmp_path / "x.npy", np.arange(40, dtype=np.float32).reshape(20, 1, 2) ** 2)
    raw_train, raw_test = (series_file(tmp_path / "x.npy", split=split).series for split in ("train", "test"))
    train, test = (series_file(tmp_path / "x.npy", split=split, standardize=True).series for split in ("train", "test"))
    mean, std = raw_train.mean(), raw_train.std(unbiased=False)
    torch.testing.assert_close(train, (raw_train - mean) / std)
    torch.testing.assert_close(test, (raw_test - mean) / std)  # the held-out part, by the training part's statistics


def test_ts_reader_names_the_file_and_line_of_bad_values(tmp_path):
    path = tmp_path / "Bad_TRAIN.ts"
    path.write_text("@classLabel true a\n@data\n1,2,x:a\n")
    with pytest.raises(ValueError, match=r"Bad_TRAIN.ts:3"):
        ucr_ts(path=path)


def test_nan_padded_short_silent_and_multichannel_series_encode_to_finite_features(tmp_path):
    x = np.zeros((4, 6, 80), dtype=np.float32)
    x[0] = np.random.default_rng(0).normal(size=(6, 80))
    x[1, :, 20:] = np.nan  # short: 20 steps, then padding
    x[2, :, 5:] = np.nan  # shorter than the receptive field
    np.savez(tmp_path / "toy.npz", x_train=x, y_train=np.array([0, 1, 2, 3]))
    source = check_datasource(ucr_npz, {"path": tmp_path / "toy.npz", "split": "all"})
    augmentation = CPCSeriesAugmentation(window=32)
    encoder = CPCSeriesEncoder(in_channels=6, **TINY_SERIES).eval()
    with torch.no_grad():
        features = encoder(pad_with_nan([augmentation.eval_transform(source[i]) for i in range(4)]))
        windows = encoder(pad_with_nan([augmentation(source[i])[0] for i in range(4)]))
    assert torch.isfinite(features).all() and torch.isfinite(windows).all()


def test_audio_folder_reads_pcm_wav_with_folder_labels_and_resamples(tmp_path):
    for name, label in [("a.wav", "dog"), ("b.wav", "cat")]:
        (tmp_path / "train" / label).mkdir(parents=True)
        write_wav(tmp_path / "train" / label / name, (np.ones((800, 2)) * 16384).astype(np.int16))
    source = check_datasource(AudioFolder, {"path": tmp_path, "label": "folder", "split": "all",
                                            "input_spec": {"sample_rate": 16000}})
    assert source[0].shape == (1, 1600) and source.labels.tolist() == [0, 1]
    stereo, rate = read_audio(tmp_path / "train" / "cat" / "b.wav")
    assert rate == 8000 and stereo.shape == (2, 800) and torch.allclose(stereo, torch.full((2, 800), 0.5))


def test_audio_folder_reads_flac(tmp_path):
    soundfile = pytest.importorskip("soundfile", reason="flac support needs the soundfile package")
    (tmp_path / "train" / "dog").mkdir(parents=True)
    soundfile.write(tmp_path / "train" / "dog" / "a.flac", np.full(800, 0.25, dtype=np.float32), 8000)
    audio, rate = read_audio(tmp_path / "train" / "dog" / "a.flac")
    assert rate == 8000 and audio.shape == (1, 800) and torch.allclose(audio, torch.full((1, 800), 0.25), atol=1e-3)


def test_corrupt_flac_error_names_the_file(tmp_path):
    pytest.importorskip("soundfile", reason="flac support needs the soundfile package")
    (tmp_path / "broken.flac").write_bytes(b"fLaC not really")
    with pytest.raises(ValueError, match="broken.flac: not a readable flac file"):
        read_audio(tmp_path / "broken.flac")


def test_long_and_silent_wavs_load(tmp_path):
    write_wav(tmp_path / "long.wav", np.zeros((8000 * 30, 1), dtype=np.int16))
    audio, _ = read_audio(tmp_path / "long.wav")
    assert audio.shape == (1, 240000) and audio.abs().max() == 0


def test_empty_wav_error_names_the_file(tmp_path):
    write_wav(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.int16))
    with pytest.raises(ValueError, match="empty.wav: the wav file holds no audio"):
        AudioFolder(path=tmp_path)[0]


def test_corrupt_wav_error_names_the_file(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(ValueError, match="broken.wav: not a readable PCM wav"):
        AudioFolder(path=tmp_path)[0]


FSDD_NPZ = SHARED_DATA / "fsdd" / "fsdd.npz"


@needs_shared_data
@pytest.mark.parametrize("label, classes", [("digit", 10), ("speaker", 6)])
def test_fsdd_gives_the_official_split_and_either_label(label, classes):
    source = check_datasource(FSDD, {"path": FSDD_NPZ, "split": "test", "label": label})
    assert len(source) == 300 and source.num_classes == classes and source[0].shape[0] == 1


@needs_shared_data
def test_fsdd_keeps_the_named_speakers():
    held_out = FSDD(path=FSDD_NPZ, split="all", label="speaker", speakers=["theo", "yweweler"])
    assert len(held_out) == 1000 and set(held_out.labels.tolist()) == {4, 5}
    seen = FSDD(path=FSDD_NPZ, split="train", speakers=["george"])
    assert len(seen) == 450
    with pytest.raises(ValueError, match="unknown speaker.*bob.*george, jackson"):
        FSDD(path=FSDD_NPZ, speakers=["bob"])


@needs_shared_data
def test_fsdd_keeps_the_given_digits():
    unheard = FSDD(path=FSDD_NPZ, split="test", label="speaker", digits=[5, 6, 7, 8, 9])
    assert len(unheard) == 150 and unheard.num_classes == 6
    assert set(FSDD(path=FSDD_NPZ, split="train", digits=[0, 4]).labels.tolist()) == {0, 4}
    with pytest.raises(ValueError, match="data.digits must list digits 0-9.*10"):
        FSDD(path=FSDD_NPZ, digits=[10])


@needs_shared_data
def test_fsdd_resamples_to_the_encoder_rate():
    native = FSDD(path=FSDD_NPZ, split="test", limit=1)[0]
    upsampled = FSDD(path=FSDD_NPZ, split="test", limit=1, input_spec={"sample_rate": 16000})[0]
    assert upsampled.shape[1] == 2 * native.shape[1]


@needs_shared_data
def test_ucr_npz_reads_basicmotions_with_six_channels():
    source = check_datasource(ucr_npz, {"path": SHARED_DATA / "ucr_uea" / "BasicMotions.npz", "split": "test"})
    assert source[0].shape == (6, 100) and source.num_classes == 4


# recipes and training

CPC_RECIPES = ["cpc-fsdd.yaml", "cpc-fsdd-16k.yaml", "cpc-fsdd-unseen-speakers.yaml", "cpc-fsdd-unheard-digits.yaml",
               "cpc-ucr-gunpoint.yaml", "cpc-ucr-basicmotions.yaml", "cpc-librispeech.yaml", "tiny/cpc.yaml",
               "tiny/cpc-audio.yaml"]


@pytest.mark.parametrize("name", CPC_RECIPES)
def test_cpc_recipes_validate(name, plugins):
    recipe = load_and_resolve(RECIPES / name, [], plugins)
    assert recipe.block("objective")["name"] == "cpc"


@needs_shared_data
@pytest.mark.parametrize("name", ["cpc.yaml", "cpc-audio.yaml", "ts2vec.yaml"])  # cpc-audio: padded windows
def test_a_killed_sequence_run_resumes_exactly(name, plugins, tmp_path):
    def trainer(run: str) -> Trainer:
        recipe = load_and_resolve(RECIPES / "tiny" / name, ["trainer.checkpoint_every=1", "eval.evaluators=[]"],
                                  plugins)
        return Trainer.from_recipe(recipe, plugins, tmp_path / run, log=open("/dev/null", "w"))

    straight = trainer("straight")
    straight.fit()
    kill_at(3, trainer("killed"), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=open("/dev/null", "w"))
    assert resumed.step == 2
    resumed.fit()
    assert straight.step == resumed.step == 4
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())


@needs_shared_data
def test_selfsup_command_trains_the_tiny_recipe_and_the_export_embeds_raw_series(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "toolkit", "train", str(RECIPES / "tiny" / "cpc.yaml"),
                             "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cpc_acc_k4" in result.stderr and "linear_top1" in result.stderr
    encoder, transform = load_encoder(run_dir / "encoder"), load_eval_transform(run_dir / "encoder")
    series = [torch.randn(1, 150), torch.cat([torch.randn(1, 90), torch.full((1, 60), math.nan)], dim=1)]
    with torch.no_grad():
        features = encoder(encoder.collate()([transform(x) for x in series]))
    assert features.shape == (2, encoder.output_dim) == (2, 64)  # mean+std of [z, c], 16 + 16 wide
    assert torch.isfinite(features).all()
