"""The built-in image plugin: augmentation, ResNet encoders, data sources."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.datasources import ImageFolder, ImageNpz, JpegNpz
from selfsup_image.encoders import ResNet18, ResNet50
from toolkit.interfaces import Batch
from toolkit.plugins import default_plugins

from conftest import ROOT, SHARED_DATA, needs_shared_data

MINI = ROOT / "data" / "cifar10_mini_jpeg.npz"


def test_augmentation_makes_n_float_views_in_unit_range():
    augmentation = SimCLRAugmentation(size=16, n_views=3)
    views = augmentation(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    assert len(views) == 3
    assert all(v.shape == (3, 16, 16) and v.dtype == torch.float32 for v in views)
    assert all(0.0 <= v.min() and v.max() <= 1.0 for v in views)
    assert not torch.equal(views[0], views[1])


def test_augmentation_is_reproducible_under_a_seed():
    augmentation = SimCLRAugmentation(size=16)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(3)
    first = augmentation(image)
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(first, augmentation(image)))


def test_eval_transform_is_deterministic_resize_and_center_crop():
    augmentation = SimCLRAugmentation(size=28, eval_crop_fraction=0.875)
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    out = augmentation.eval_transform(image)
    assert out.shape == (3, 28, 28)
    assert torch.equal(out, augmentation.eval_transform(image))


@pytest.mark.parametrize(("encoder", "expected_dim"), [(ResNet18(stem="cifar", width=8), 64),
                                                       (ResNet50(width=8), 256)])
def test_resnet_output_dim_matches_declared(encoder, expected_dim):
    h = encoder.eval()(torch.rand(2, 3, 32, 32))
    assert encoder.output_dim == expected_dim and h.shape == (2, expected_dim)
    assert encoder.output_kind == "vector"


def test_resnet_normalises_its_input_itself():
    encoder = ResNet18(stem="cifar", width=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    plain = ResNet18(stem="cifar", width=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    plain.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(encoder(x), plain((x - 0.5) / 0.25), atol=1e-5)


def test_resnet_loads_local_torchvision_weights(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    encoder = ResNet18(weights=tmp_path / "resnet18.pth")
    assert torch.equal(encoder.net.conv1.weight, reference.conv1.weight)


def test_resnet_rejects_weights_of_another_shape(tmp_path):
    torch.save(ResNet18(width=8).net.state_dict(), tmp_path / "small.pth")
    with pytest.raises(ValueError, match="small.pth does not fit this ResNet; use a torchvision ResNet state dict of the same depth"):
        ResNet18(weights=tmp_path / "small.pth")


def test_jpeg_npz_reads_the_bundled_quickstart_subset():
    train, test = JpegNpz(MINI, split="train"), JpegNpz(MINI, split="test")
    assert (len(train), len(test)) == (8000, 1000)
    assert train[0].shape == (3, 32, 32) and train[0].dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [800] * 10 and train.num_classes == 10


def test_limit_keeps_a_class_balanced_fixed_subset():
    a, b = JpegNpz(MINI, split="train", limit=1000), JpegNpz(MINI, split="train", limit=1000)
    assert torch.equal(a.labels, b.labels)
    assert torch.bincount(a.labels).min() > 70


def test_corrupt_jpeg_names_the_file_and_index(tmp_path):
    np.savez(tmp_path / "bad.npz", jpeg_train=np.frombuffer(b"not a jpeg at all", np.uint8),
             offsets_train=np.array([0, 17]), y_train=np.array([0]))
    with pytest.raises(ValueError, match=r"bad\.npz: image 0 of split 'train' is not a valid JPEG"):
        JpegNpz(tmp_path / "bad.npz")[0]


@pytest.mark.parametrize("source", [lambda **kw: JpegNpz(MINI, limit=64, **kw),
                                    lambda **kw: ImageNpz(SHARED_DATA / "cifar10" / "cifar10.npz", limit=64, **kw)])
def test_on_device_holds_the_decoded_items_as_one_tensor_indexable_by_a_batch(source):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    per_item, resident = source(), source(on_device=True, device=torch.device("cpu"))
    assert per_item.device is None and resident.device == torch.device("cpu")
    indices = torch.tensor([5, 0, 63])
    assert torch.equal(resident[indices], torch.stack([per_item[i] for i in indices.tolist()]))
    assert torch.equal(resident[7], per_item[7]) and torch.equal(resident.labels, per_item.labels)


def test_image_npz_scales_grayscale_digits_to_uint8(tmp_path):
    np.savez(tmp_path / "digits.npz", x=np.full((4, 8, 8), 16, np.uint8), y=np.arange(4))
    source = ImageNpz(tmp_path / "digits.npz", max_value=16)
    assert source[0].shape == (1, 8, 8) and int(source[0].max()) == 255
    assert source.num_classes == 4


def test_image_npz_missing_split_lists_the_keys(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(KeyError, match="x_val"):
        ImageNpz(tmp_path / "a.npz", split="val")


def test_image_folder_labels_by_sorted_class_folder(tmp_path):
    for split in ("train", "test"):
        for name, color in (("cat", 10), ("dog", 200)):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 6), (color, 0, 0)).save(tmp_path / split / name / "a.png")
    source = ImageFolder(tmp_path, split="train")
    assert source.classes == ["cat", "dog"] and source.labels.tolist() == [0, 1]
    assert source[1].shape == (3, 6, 8) and int(source[1][0, 0, 0]) == 200


def test_image_folder_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="broken.jpg"):
        ImageFolder(tmp_path)[0]


def test_nt_xent_objective_trains_through_one_batched_forward(plugins):
    from toolkit.recipe import build

    encoder = ResNet18(stem="cifar", width=4)
    projector = build(plugins, "projector", {"name": "mlp", "hidden_dim": 16, "output_dim": 8},
                      input_dim=encoder.output_dim)
    objective = build(plugins, "objective", {"name": "nt-xent", "temperature": 0.5})
    views = [torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)]
    output = objective(Batch(views=views, index=torch.arange(4)), encoder, projector)
    output.loss.backward()
    assert output.loss.ndim == 0 and encoder.net.conv1.weight.grad is not None
    assert 0.0 <= float(output.metrics["contrastive_acc"]) <= 1.0


@needs_shared_data
def test_full_cifar10_jpeg_pack_has_50000_training_images():
    source = JpegNpz(SHARED_DATA / "cifar10" / "cifar10_jpeg.npz", split="train")
    assert len(source) == 50000 and source.num_classes == 10
    assert source[49999].shape == (3, 32, 32)


def test_an_exported_image_encoder_takes_pil_images_arrays_and_paths_and_imports_no_other_modality(tmp_path):
    from toolkit.export import export_encoder
    from toolkit.recipe import build

    plugins = default_plugins()
    encoder_block = {"name": "resnet18", "width": 4, "stem": "cifar"}
    augmentation_block = {"name": "simclr", "size": 16}
    export_encoder(build(plugins, "encoder", encoder_block), encoder_block, augmentation_block, tmp_path / "enc",
                   plugins)
    Image.new("RGB", (20, 24), (200, 30, 10)).save(tmp_path / "photo.png")
    code = f"""
import sys, numpy as np, torch, toolkit
from PIL import Image
encoder = toolkit.load_encoder({str(tmp_path / 'enc')!r})
transform = toolkit.load_eval_transform({str(tmp_path / 'enc')!r})
image = Image.open({str(tmp_path / 'photo.png')!r})
inputs = [image, np.asarray(image), np.asarray(image) / 255.0, {str(tmp_path / 'photo.png')!r},
          torch.from_numpy(np.asarray(image)).permute(2, 0, 1)]
with torch.no_grad():
    features = [encoder(transform(x)[None]) for x in inputs]
assert all(torch.allclose(f, features[0], atol=1e-5) for f in features), features
print(' '.join(sorted(m for m in sys.modules if '.' not in m)))
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert not set(completed.stdout.split()) & {"torchaudio", "transformers", "datasets", "av", "soundfile",
                                                "sentence_transformers"}
