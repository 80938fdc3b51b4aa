"""kNN and linear-probe evaluators on features with known answers."""

from __future__ import annotations

import torch

from toolkit.evaluation import FeatureContext, KNNEvaluator, LinearProbeEvaluator, fit_linear_probe, knn_scores
from toolkit.interfaces import EvalContext


class FixedFeatures(EvalContext):
    def __init__(self, train, train_labels, test, test_labels):
        self._features = {"train": (train, train_labels), "test": (test, test_labels)}

    def features(self, role):
        return self._features[role]

    def source(self, role):
        raise AssertionError("kNN and the linear probe need features only")

    def embed(self, items):
        raise AssertionError("kNN and the linear probe need features only")


def test_knn_weights_votes_by_exponentiated_cosine_similarity():
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    scores = knn_scores(train, labels, torch.tensor([[1.0, 0.1]]), k=2, temperature=0.5)
    u = torch.nn.functional.normalize(torch.tensor([1.0, 0.1]), dim=0)
    expected_0 = (u @ torch.tensor([1.0, 0.0]) / 0.5).exp()
    expected_1 = (u @ torch.tensor([0.8, 0.6]) / 0.5).exp()
    assert torch.allclose(scores, torch.stack([expected_0, expected_1])[None], atol=1e-6)


def test_knn_majority_can_lose_to_a_much_closer_neighbour():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    metrics = KNNEvaluator(k=3, temperature=0.01).evaluate(
        FixedFeatures(train, labels, torch.tensor([[1.0, 0.05]]), torch.tensor([0])))
    assert metrics["knn_top1"] == 1.0


def test_knn_top5_is_reported_only_with_more_than_five_classes():
    train = torch.eye(6)
    labels = torch.arange(6)
    metrics = KNNEvaluator(k=2).evaluate(FixedFeatures(train, labels, train, labels))
    assert metrics == {"knn_top1": 1.0, "knn_top5": 1.0}


def test_linear_probe_separates_linearly_separable_classes():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=generator) * 4
    labels = torch.arange(200) % 4
    features = centers[labels] + torch.randn(200, 16, generator=generator)
    metrics = LinearProbeEvaluator().evaluate(FixedFeatures(features[:150], labels[:150], features[150:],
                                                            labels[150:]))
    assert metrics["linear_top1"] == 1.0


def test_linear_probe_is_deterministic():
    features, labels = torch.randn(50, 5, generator=torch.Generator().manual_seed(1)), torch.arange(50) % 3
    a = fit_linear_probe(features, labels, 1e-3, 50)
    b = fit_linear_probe(features, labels, 1e-3, 50)
    assert torch.equal(a(features), b(features))


def test_feature_context_pools_sequences_and_restores_training_mode():
    class Sequence(torch.nn.Module):
        output_dim, output_kind = 2, "sequence"

        def collate(self):
            return torch.stack

        def forward(self, x):
            return torch.stack([x, 2 * x], dim=1)  # (N, T=2, D)

    class Identity:
        def eval_transform(self, item):
            return item

    encoder = Sequence().train()
    context = FeatureContext(encoder, Identity(), {}, torch.device("cpu"), batch_size=2)
    features = context.embed([torch.tensor([1.0, 2.0])] * 3)
    assert torch.equal(features, torch.tensor([[1.5, 3.0]] * 3))
    assert encoder.training
