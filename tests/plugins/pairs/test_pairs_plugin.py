"""The pairs plugin's components: paired data sources, the pair augmentation and its position-keyed
caption, the two-tower encoder (collate, lock), per-tower learning rates, retrieval and
zero-shot evaluation, and the contracts `recipe validate` checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from selfsup_pairs.augmentations import PairAugmentation
from selfsup_pairs.datasources import Flickr8k, ImageTextCsv
from selfsup_pairs.encoders import PairCollate
from selfsup_pairs.evaluation import Retrieval, ZeroShot, recall_at_k
from selfsup_pairs.optim import adamw_towers
from toolkit.compatibility import IncompatibleComponents
from toolkit.data import BatchPlan, ViewBatches
from toolkit.errors import RecipeError
from toolkit.interfaces import DataSource, EvalContext, NotEvaluable
from toolkit.optim import parameter_groups
from toolkit.recipe import build, load_and_resolve
from toolkit.testing import check_augmentation, check_datasource, check_encoder

from conftest import RECIPES, SHARED_DATA, needs_shared_data
from test_pairs_objectives import PixelTower, WordIds, tiny_towers

TINY = RECIPES / "tiny" / "clip.yaml"
WORDS = ["dog", "man", "beach", "red", "ball", "girl", "water", "runs", "jumps", "sits"]


def write_pairs_npz(path: Path, train: int = 24, test: int = 8, size: int = 16, captions: int = 3) -> Path:
    """An npz in the flickr8k layout: ``train + test`` random images (test last), ``captions``
    captions per image stored in reverse caption-number order, caption ``n`` of image ``i``
    being ``"image {i} caption {n} <words>"``."""
    generator = np.random.default_rng(0)
    images = train + test
    owner = np.repeat(np.arange(images), captions)[::-1].copy()
    number = np.tile(np.arange(captions), images)[::-1].copy()
    texts = [f"image {i} caption {n} {' '.join(generator.choice(WORDS, 4))}" for i, n in zip(owner, number)]
    np.savez(path, images=generator.integers(0, 256, (images, size, size, 3), dtype=np.uint8),
             is_test=np.arange(images) >= train, captions=np.array(texts, dtype="S"), caption_image=owner,
             caption_number=number, caption_is_test=owner >= train)
    return path


def pair_augmentation(size: int = 8) -> PairAugmentation:
    return build_block("augmentation", {"name": "pairs", "image": {"name": "simclr", "n_views": 1, "size": size}})


def build_block(kind: str, block: dict):
    from toolkit.plugins import default_plugins

    return build(default_plugins(), kind, block)


# --- data ---------------------------------------------------------------------------------------


def test_flickr8k_items_are_an_image_with_all_its_captions_in_order(tmp_path):
    source = check_datasource(Flickr8k, {"path": write_pairs_npz(tmp_path / "pairs.npz"), "split": "test"})
    assert len(source) == 8 and source.labels is None
    item = source[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 16, 16)
    assert [caption.split()[:4] for caption in item["text"]] == [["image", "24", "caption", str(n)] for n in range(3)]


def test_flickr8k_limit_keeps_a_fixed_subset_of_images_with_their_captions(tmp_path):
    path = write_pairs_npz(tmp_path / "pairs.npz")
    first, again = Flickr8k(path, limit=5), Flickr8k(path, limit=5)
    assert len(first) == 5 and [first[i]["text"] for i in range(5)] == [again[i]["text"] for i in range(5)]
    assert all(int(first[i]["text"][0].split()[1]) < 24 for i in range(5))  # training images only


def test_flickr8k_names_the_keys_a_wrong_file_lacks(tmp_path):
    np.savez(tmp_path / "other.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks images, is_test, captions, caption_image"):
        Flickr8k(tmp_path / "other.npz")


@needs_shared_data
def test_the_shared_flickr8k_has_the_standard_test_split():
    source = Flickr8k(SHARED_DATA / "flickr8k" / "flickr8k_64.npz", split="test")
    assert len(source) == 1000 and source[999]["image"].shape == (3, 64, 64)
    assert all(len(source[i]["text"]) == 5 for i in (0, 500, 999))


def write_csv_pairs(folder: Path, split_column: bool) -> Path:
    from torchvision.io import write_png

    rows = ["image,caption" + (",split" if split_column else "")]
    for i in range(10):
        write_png(torch.full((3, 8, 8), i * 20, dtype=torch.uint8), str(folder / f"{i}.png"))
        for n in range(2):
            rows.append(f"{i}.png,photo {i} caption {n}" + ("," + ("test" if i >= 8 else "train") if split_column
                                                              else ""))
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return folder / "pairs.csv"


def test_image_text_csv_groups_captions_by_image_and_reads_its_split_column(tmp_path):
    source = check_datasource(ImageTextCsv, {"path": write_csv_pairs(tmp_path, split_column=True), "split": "test"})
    assert len(source) == 2 and source[1]["text"] == ["photo 9 caption 0", "photo 9 caption 1"]
    assert source[1]["image"].shape == (3, 8, 8) and int(source[1]["image"][0, 0, 0]) == 180


def test_image_text_csv_without_a_split_column_holds_out_whole_images(tmp_path):
    path = write_csv_pairs(tmp_path, split_column=False)
    train, test = ImageTextCsv(path, "train", holdout_fraction=0.2), ImageTextCsv(path, "test", holdout_fraction=0.2)
    assert len(train) == 8 and len(test) == 2 and "held-out" in test.split_note
    assert not {c for i in range(8) for c in train[i]["text"]} & {c for i in range(2) for c in test[i]["text"]}


# --- augmentation -------------------------------------------------------------------------------


def test_the_pair_augmentation_makes_an_image_view_and_one_of_the_captions():
    item = {"image": torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8), "text": ["a", "b", "c"]}
    image, caption = check_augmentation(PairAugmentation, {"image": {"name": "simclr", "n_views": 1, "size": 8}}, item)
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and caption in item["text"]
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        seen.add(pair_augmentation()(item)[1])
    assert seen == {"a", "b", "c"}


def test_the_caption_of_a_step_is_the_same_after_a_resume(tmp_path):
    """Batches are made from (epoch, step) alone: a fresh loader (a resumed run) picks the same captions."""
    source = Flickr8k(write_pairs_npz(tmp_path / "pairs.npz"))
    plan = BatchPlan(len(source), batch_size=8, seed=3)

    def captions(epoch: int, step: int) -> list[str]:
        batches = ViewBatches(source, pair_augmentation(), PairCollate(torch.stack, list), plan)
        return batches[(epoch, step, 0)].views[1]

    assert captions(1, 2) == captions(1, 2)
    numbers = {caption.split()[3] for epoch in range(3) for step in range(3) for caption in captions(epoch, step)}
    assert numbers == {"0", "1", "2"}


def test_the_pair_augmentation_refuses_an_image_augmentation_of_several_views():
    with pytest.raises(RecipeError, match="augmentation.image.n_views must be 1"):
        build_block("augmentation", {"name": "pairs", "image": {"name": "simclr", "n_views": 2}})


def test_the_pair_augmentation_says_what_a_pair_is():
    with pytest.raises(TypeError, match=r"takes pairs \{'image'"):
        pair_augmentation()(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_the_evaluation_twin_passes_text_and_transforms_images_and_pairs():
    augmentation, image = pair_augmentation(), torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    assert augmentation.eval_transform("a caption") == "a caption"
    assert torch.equal(augmentation.eval_transform({"image": image, "text": ["x"]}), augmentation.eval_transform(image))
    assert augmentation.eval_transform(image).shape == (3, 8, 8)


def test_a_batched_image_augmentation_augments_the_image_views_on_the_device(tmp_path):
    source = Flickr8k(write_pairs_npz(tmp_path / "pairs.npz"))
    augmentation = build_block("augmentation", {"name": "pairs", "image": {"name": "simclr", "n_views": 1, "size": 8,
                                                                              "device": "batch"}})
    batches = ViewBatches(source, augmentation, PairCollate(torch.stack, list), BatchPlan(len(source), 8, seed=0))
    batch = augmentation.on_device(batches[(0, 0, 0)])
    assert batch.views[0].shape == (8, 3, 8, 8) and batch.views[0].dtype == torch.float32
    assert len(batch.views[1]) == 8 and isinstance(batch.views[1][0], str)


# --- encoder and optimizer ----------------------------------------------------------------------


def test_the_two_tower_encoder_embeds_images_and_texts_into_one_space():
    encoder = tiny_towers(embed_dim=4)
    check_encoder(lambda: tiny_towers(embed_dim=4), {}, [torch.rand(3, 4, 4) for _ in range(3)])
    collate = pickle.loads(pickle.dumps(encoder.collate()))  # loader workers get a copy
    captions = ["a dog runs", "a man", "red ball on the beach"]
    texts = encoder(collate(captions))
    assert texts.shape == (3, 4) and torch.equal(texts, encoder.encode_text(WordIds()(captions)))


def test_the_collate_refuses_a_view_that_mixes_images_and_captions():
    with pytest.raises(ValueError, match="mixes captions and images"):
        tiny_towers().collate()([torch.rand(3, 4, 4), "a dog"])


def test_a_locked_tower_is_frozen_and_stays_in_eval_mode():
    encoder = tiny_towers(lock="text")
    encoder.eval().train()
    assert not encoder.text.training and encoder.image.training and encoder.text_projection.weight.requires_grad
    assert not any(p.requires_grad for p in encoder.text.parameters())
    assert all(p.requires_grad for p in encoder.image.parameters())


def test_adamw_towers_scales_each_towers_learning_rate():
    encoder = tiny_towers()
    model = nn.ModuleDict({"encoder": encoder})
    optimizer = adamw_towers(parameter_groups([model]), model, lr=0.1, image_lr_scale=0.5, text_lr_scale=0.01)
    lrs = {(group["tower"], group["weight_decay"]): group["lr"] for group in optimizer.param_groups}
    assert optimizer.param_groups[0]["tower"] == "rest" and lrs[("rest", 0.2)] == 0.1
    assert lrs[("image", 0.2)] == pytest.approx(0.05) and lrs[("image", 0.0)] == pytest.approx(0.05)
    assert lrs[("text", 0.2)] == pytest.approx(0.001) and len(lrs) == 4
    image_parameters = {id(p) for g in optimizer.param_groups if g["tower"] == "image" for p in g["params"]}
    assert image_parameters == {id(p) for p in encoder.image.parameters()}


def test_adamw_towers_refuses_an_encoder_that_is_not_a_two_tower():
    model = nn.ModuleDict({"encoder": PixelTower()})
    with pytest.raises(ValueError, match="use optimizer: {name: adamw}"):
        adamw_towers(parameter_groups([model]), model)


# --- evaluation ---------------------------------------------------------------------------------

SCORES = torch.tensor([[0.1, 0.5, 0.6, 0.2, 0.0],   # image 0 owns captions 0, 1
                       [0.3, 0.0, 0.4, 0.1, 0.2],   # image 1 owns caption 2
                       [0.2, 0.1, 0.0, 0.3, 0.5]])  # image 2 owns captions 3, 4
OWNER = torch.tensor([0, 0, 1, 2, 2])


def features_with_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and caption vectors whose dot products are ``scores`` (M, K): images are basis
    vectors, captions the columns plus a last coordinate bringing them to unit norm."""
    images = torch.eye(scores.shape[0], scores.shape[0] + 1)
    captions = torch.cat([scores.T, (1 - scores.T.square().sum(1, keepdim=True)).sqrt()], dim=1)
    return images, captions


def test_recall_at_k_on_a_hand_made_example():
    """i->t ranks: image 0's best own caption (0.5) is beaten by caption 2 (0.6): rank 1; images
    1 and 2: rank 0. t->i ranks: caption 0 (0.1) is beaten by images 1 and 2: rank 2; caption
    2 (0.4) by image 0: rank 1; captions 1, 3, 4: rank 0."""
    metrics = recall_at_k(*features_with_scores(SCORES), OWNER, [1, 2, 3])
    expected = {"i2t_r1": 2 / 3, "i2t_r2": 1.0, "i2t_r3": 1.0, "t2i_r1": 3 / 5, "t2i_r2": 4 / 5, "t2i_r3": 1.0}
    assert metrics == pytest.approx({**expected, "rsum": sum(expected.values())})
    assert recall_at_k(*features_with_scores(SCORES), OWNER, [1], chunk=2) == pytest.approx(
        {"i2t_r1": 2 / 3, "t2i_r1": 3 / 5, "rsum": 2 / 3 + 3 / 5})


def test_ties_count_against_the_query():
    metrics = recall_at_k(torch.ones(3, 4), torch.ones(5, 4), OWNER, [1, 5])
    assert metrics["i2t_r1"] == 0 and metrics["t2i_r1"] == 0 and metrics["t2i_r5"] == 1


class FixedContext(EvalContext):
    """Embeds by lookup: an item's vector is ``vectors[key(item)]``."""

    def __init__(self, vectors: dict, source: DataSource | None = None) -> None:
        self.encoder, self.device, self.vectors, self._source = tiny_towers(), torch.device("cpu"), vectors, source

    def features(self, role):
        raise AssertionError("not used")

    def source(self, role):
        return self._source

    def embed(self, items):
        return torch.stack([self.vectors[item if isinstance(item, str) else int(item.flatten()[0])] for item in items])


class Shapes(DataSource):
    """Four one-pixel 'images' whose value is their index; labels 0, 1, 1, 0."""

    labels = torch.tensor([0, 1, 1, 0])
    num_classes = 2
    classes = ["circle", "square"]

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((3, 1, 1), index, dtype=torch.uint8)


def test_zero_shot_classifies_by_the_mean_of_the_prompt_embeddings():
    """Image 2, a square, is nearer the circle than the plain mean of the square's prompts, but
    nearer the mean of the normalised prompt embeddings (CLIP's ensembling); image 3, a circle,
    is nearer the square either way."""
    vectors = {0: torch.tensor([1.0, 0.0]), 1: torch.tensor([0.0, 1.0]), 2: torch.tensor([0.8, 0.6]),
               3: torch.tensor([0.1, 1.0]),
               "a circle": torch.tensor([1.0, 0.0]), "the circle": torch.tensor([1.0, 0.1]),
               "a square": torch.tensor([0.0, 10.0]), "the square": torch.tensor([1.0, 1.0])}
    evaluator = ZeroShot(Shapes(), prompts=("a {}", "the {}"))
    assert evaluator.evaluate(FixedContext(vectors)) == {"zero_shot_top1": 0.75}


def test_zero_shot_names_what_its_data_lacks():
    unlabelled = Shapes()
    unlabelled.labels = None
    with pytest.raises(ValueError, match="has no labels"):
        ZeroShot(unlabelled)
    nameless = Shapes()
    nameless.classes = []
    with pytest.raises(ValueError, match="does not name its classes"):
        ZeroShot(nameless)
    with pytest.raises(ValueError, match="has no {}"):
        ZeroShot(Shapes(), prompts=("a photo",))


def test_retrieval_skips_data_that_is_not_pairs_and_encoders_that_are_not_two_towers():
    with pytest.raises(NotEvaluable, match="needs image-text pairs"):
        Retrieval().evaluate(FixedContext({}, Shapes()))
    context = FixedContext({}, Shapes())
    context.encoder = PixelTower()
    with pytest.raises(NotEvaluable, match="needs a two-tower encoder"):
        Retrieval().evaluate(context)


# --- contracts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("override, fragment", [
    ("augmentation={name: simclr}", "augmentation simclr"),
    ("objective={name: nt-xent}", "objective nt-xent"),
    ("encoder={name: resnet18}", "encoder resnet18"),
])
def test_recipe_validate_refuses_components_that_do_not_take_pairs(plugins, override, fragment):
    with pytest.raises(IncompatibleComponents, match=fragment):
        load_and_resolve(TINY, [override], plugins)
