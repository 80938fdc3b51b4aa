"""CLIP and SigLIP: the losses against naive loops, learned temperature and bias, the conformance
kit on one process and on two (the global batch's loss and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_pairs.encoders import TwoTowerEncoder
from selfsup_pairs.objectives import CLIP, SigLIP, clip_loss, siglip_loss
from toolkit.interfaces import Batch, Encoder
from toolkit.optim import parameter_groups
from toolkit.projectors import IdentityProjector
from toolkit.testing import check_objective, check_objective_distributed

VOCABULARY = 20


class PixelTower(Encoder):
    """A linear image tower without batch norm, ``(N, 3, 4, 4) -> (N, 6)``. Module-level, so that
    check_objective_distributed can send it to other processes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(48, 6)
        self.output_dim = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class WordIds:
    """Collates strings into ``{input_ids, attention_mask}: (N, T)``, a word's id from its letters."""

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        words = [text.split() for text in texts]
        length = max(len(w) for w in words)
        ids = torch.zeros(len(texts), length, dtype=torch.int64)
        for row, sentence in enumerate(words):
            ids[row, :len(sentence)] = torch.tensor([sum(map(ord, w)) % (VOCABULARY - 1) + 1 for w in sentence])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


class TokenTower(Encoder):
    """A bag-of-words text tower, ``{input_ids, attention_mask} -> (N, 5)``: mean word embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, 5)
        self.output_dim = 5

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = x["attention_mask"].unsqueeze(-1).float()
        return (self.embedding(x["input_ids"]) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def collate(self) -> WordIds:
        return WordIds()


def tiny_towers(embed_dim: int = 4, **params) -> TwoTowerEncoder:
    torch.manual_seed(0)
    return TwoTowerEncoder(image=PixelTower(), text=TokenTower(), embed_dim=embed_dim, **params)


def pair_batch(n: int = 8) -> Batch:
    generator = torch.Generator().manual_seed(0)
    tokens = {"input_ids": torch.randint(1, VOCABULARY, (n, 5), generator=generator),
              "attention_mask": torch.ones(n, 5, dtype=torch.int64)}
    return Batch(views=[torch.randn(n, 3, 4, 4, generator=generator), tokens], index=torch.arange(n))


def naive_clip(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Both directions unrolled: -log of the own pair's share of each row, then of each column."""
    n, total = len(image), 0.0
    logit = [[scale * F.cosine_similarity(image[i], text[j], dim=0).item() for j in range(n)] for i in range(n)]
    for i in range(n):
        total -= math.log(math.exp(logit[i][i]) / sum(math.exp(logit[i][j]) for j in range(n)))
        total -= math.log(math.exp(logit[i][i]) / sum(math.exp(logit[j][i]) for j in range(n)))
    return total / (2 * n)


def naive_siglip(image: torch.Tensor, text: torch.Tensor, scale: float, bias: float) -> float:
    """The paper's eq. 1: -1/N sum_ij log 1 / (1 + exp(-z_ij (t x_i . y_j + b)))."""
    n, total = len(image), 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = scale * F.cosine_similarity(image[i], text[j], dim=0).item() + bias
            total -= math.log(1 / (1 + math.exp(-z * logit)))
    return total / n


def test_clip_loss_matches_a_naive_loop():
    image, text = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    loss, _, _ = clip_loss(image, text, torch.tensor(3.0))
    assert loss.item() == pytest.approx(naive_clip(image.double(), text.double(), 3.0), rel=1e-5)


def test_siglip_loss_matches_a_naive_loop():
    image, text = torch.randn(6, 4), torch.randn(6, 4)
    loss, _, _ = siglip_loss(image, text, torch.tensor(10.0), torch.tensor(-3.0))
    assert loss.item() == pytest.approx(naive_siglip(image.double(), text.double(), 10.0, -3.0), rel=1e-5)


def test_match_accuracy_counts_rows_and_columns_whose_best_is_the_own_pair():
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [1.0, 0.1, 0], [0, 0, 1.0]])  # caption 1 is closest to image 0
    _, i2t, t2i = clip_loss(image, text, torch.tensor(1.0))
    assert i2t.item() == pytest.approx(1.0)  # image 1's best caption is still caption 1
    assert t2i.item() == pytest.approx(2 / 3)


def test_the_initial_temperature_scale_and_bias_are_the_papers():
    assert CLIP().logit_scale.exp().item() == pytest.approx(1 / 0.07)
    siglip = SigLIP()
    assert siglip.logit_scale.exp().item() == pytest.approx(10.0) and siglip.logit_bias.item() == -10.0


@pytest.mark.parametrize("factory", [CLIP, SigLIP])
def test_the_temperature_and_bias_are_learned(factory):
    encoder, objective = tiny_towers(), factory()
    model = nn.ModuleList([encoder, objective])
    before = {name: p.detach().clone() for name, p in objective.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups([model]), lr=0.01)
    objective(pair_batch(), encoder, IdentityProjector(4)).loss.backward()
    optimizer.step()
    assert before and all(not torch.equal(before[name], p) for name, p in objective.named_parameters())


def test_clip_clips_the_logit_scale_at_100_after_a_step():
    objective = CLIP()
    with torch.no_grad():
        objective.logit_scale.fill_(6.0)
    objective.after_step(1, 10, tiny_towers(), IdentityProjector(4))
    assert objective.logit_scale.exp().item() == pytest.approx(100.0)


def test_clip_refuses_a_temperature_beyond_the_clip():
    with pytest.raises(ValueError, match="max_logit_scale"):
        CLIP(temperature=0.001)


@pytest.mark.parametrize("factory", [CLIP, SigLIP])
def test_objective_conforms(factory):
    output = check_objective(factory, {}, pair_batch(), tiny_towers(), IdentityProjector(4))
    assert {"logit_scale", "i2t_acc", "t2i_acc"} <= output.metrics.keys()


@pytest.mark.parametrize("factory", [CLIP, SigLIP])
def test_two_processes_give_the_loss_and_gradients_of_the_global_batch(factory):
    _, gradients = check_objective_distributed(factory, {}, pair_batch(), tiny_towers(), IdentityProjector(4))
    assert gradients["objective.logit_scale"].abs().item() > 0
    assert gradients["encoder.text.embedding.weight"].abs().sum() > 0


def test_an_objective_refuses_batches_of_other_than_two_views():
    batch = pair_batch()
    batch.views = batch.views[:1]
    with pytest.raises(ValueError, match="two views per pair"):
        CLIP()(batch, tiny_towers(), IdentityProjector(4))
