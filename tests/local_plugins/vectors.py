"""A whole toy modality as one local plugin: noisy views of clustered vectors.

Used by tests/toolkit/test_toy_modality.py to show that every component kind can come from a plugin and
train through the unchanged engine.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from toolkit import Augmentation, DataSource, Encoder, EvalContext, Evaluator, Objective, ObjectiveOutput, hookimpl
from toolkit.interfaces import Projector
from toolkit.distributed import gather_with_grad
from toolkit.losses import nt_xent


class ClusteredVectors(DataSource):
    """``size`` vectors around ``classes`` random centres; the split picks a disjoint seed."""

    def __init__(self, split: str = "train", size: int = 128, dim: int = 8, classes: int = 4) -> None:
        generator = torch.Generator().manual_seed({"train": 0, "test": 1}[split])
        centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(42)) * 3
        self.labels = torch.arange(size) % classes
        self.num_classes = classes
        self.items = centres[self.labels] + torch.randn(size, dim, generator=generator)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tensor:
        return self.items[index]


class GaussianNoise(Augmentation):
    def __init__(self, sigma: float = 0.5, n_views: int = 2) -> None:
        self.sigma, self.n_views = sigma, n_views

    def __call__(self, item: Tensor) -> list[Tensor]:
        return [item + self.sigma * torch.randn_like(item) for _ in range(self.n_views)]

    def eval_transform(self, item: Tensor) -> Tensor:
        return item


class MLPEncoder(Encoder):
    def __init__(self, input_dim: int = 8, width: int = 16, batch_norm: bool = False) -> None:
        super().__init__()
        norm = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.net = nn.Sequential(nn.Linear(input_dim, width), norm, nn.ReLU(), nn.Linear(width, width))
        self.output_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LinearProjector(Projector):
    def __init__(self, input_dim: int, output_dim: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)
        self.output_dim = output_dim

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)


class VectorContrast(Objective):
    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, batch, encoder, projector) -> ObjectiveOutput:
        z = projector(encoder(torch.cat(batch.views))).reshape(len(batch.views), len(batch), -1)
        loss, accuracy = nt_xent(gather_with_grad(z, dim=1), self.temperature)  # negatives from every process
        return ObjectiveOutput(loss, {"accuracy": accuracy})


class CentroidAccuracy(Evaluator):
    """Nearest class centroid (computed on train features) accuracy on test features."""

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        train, train_labels = context.features("train")
        test, test_labels = context.features("test")
        centroids = torch.stack([train[train_labels == c].mean(0) for c in range(int(train_labels.max()) + 1)])
        predicted = torch.cdist(test, centroids).argmin(dim=1)
        return {"centroid_top1": (predicted == test_labels).float().mean().item()}


@hookimpl
def register_datasources(register):
    register("clustered-vectors", ClusteredVectors)


@hookimpl
def register_augmentations(register):
    register("gaussian-noise", GaussianNoise)


@hookimpl
def register_encoders(register):
    register("vector-mlp", MLPEncoder)


@hookimpl
def register_projectors(register):
    register("vector-linear", LinearProjector)


@hookimpl
def register_objectives(register):
    register("vector-contrast", VectorContrast)


@hookimpl
def register_evaluators(register):
    register("centroid", CentroidAccuracy)


@hookimpl
def on_step_end(run, step, metrics):
    """Simulates a crash (tests of resume): raise once step SELFSUP_TEST_CRASH_AT ends."""
    if str(step) == os.environ.get("SELFSUP_TEST_CRASH_AT"):
        raise RuntimeError(f"simulated crash at step {step}")
