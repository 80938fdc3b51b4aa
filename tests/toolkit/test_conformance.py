"""The built-in components pass the conformance kit (toolkit.testing) that plugins use, and the
kit catches components that break the interfaces."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.datasources import JpegNpz
from selfsup_image.encoders import ResNet18, ResNet50
from selfsup_image.simclr import NTXent
from toolkit.distributed import all_gather, rank
from toolkit.evaluation import KNNEvaluator, LinearProbeEvaluator
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.projectors import IdentityProjector, MLPProjector
from toolkit.testing import (
    check_augmentation,
    check_datasource,
    check_encoder,
    check_factory_schema,
    check_objective,
    check_objective_distributed,
    check_projector,
)
from toolkit.views import embed_views

from conftest import ROOT

IMAGES = [torch.rand(3, 16, 16) for _ in range(4)]


@pytest.mark.parametrize("encoder", [ResNet18, ResNet50])
def test_resnet_encoders_conform(encoder):
    check_encoder(encoder, {"stem": "cifar", "width": 4}, IMAGES)


@pytest.mark.parametrize(("projector", "params"), [(MLPProjector, {"hidden_dim": 8, "output_dim": 4}),
                                                   (IdentityProjector, {})])
def test_projectors_conform(projector, params):
    check_projector(projector, params, input_dim=6)


def test_simclr_augmentation_conforms():
    check_augmentation(SimCLRAugmentation, {"size": 16, "n_views": 3}, torch.randint(0, 256, (3, 32, 32),
                                                                                      dtype=torch.uint8))


def test_jpeg_npz_conforms():
    check_datasource(JpegNpz, {"path": ROOT / "data" / "cifar10_mini_jpeg.npz", "split": "test", "limit": 50})


def test_nt_xent_conforms():
    encoder = ResNet18(stem="cifar", width=4)
    projector = MLPProjector(encoder.output_dim, hidden_dim=16, output_dim=8)
    batch = Batch(views=[torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)], index=torch.arange(4))
    check_objective(NTXent, {"temperature": 0.5}, batch, encoder, projector)


class LinearEncoder(Encoder):
    """``(N, 8) -> (N, 6)``, no batch norm: the same function of each item on any split of the batch.
    Module-level, so that check_objective_distributed can send it to other processes."""

    output_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, self.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def variance_hinge(z: Tensor) -> Tensor:
    """VICReg's variance term (Bardes et al. 2022), ``1/D sum_j max(0, 1 - sqrt(Var(z_j) + 1e-4))``, ``z: (M, D)``."""
    return torch.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()


class LocalVariance(Objective):
    """The variance hinge of the local batch: on several processes each sees the spread of its own shard."""

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        return ObjectiveOutput(variance_hinge(torch.cat(embed_views(batch.views, encoder, projector))), {})


class VarianceGatheredWithoutGradient(Objective):
    """The variance hinge of the global batch gathered without gradient, this process's rows put
    back with theirs: the loss is right, but the other processes' rows send no gradient back,
    so after DDP's average every gradient is ``W`` times too small."""

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        z = torch.cat(embed_views(batch.views, encoder, projector))
        start = rank() * len(z)
        gathered = all_gather(z.detach())
        return ObjectiveOutput(variance_hinge(torch.cat([gathered[:start], z, gathered[start + len(z):]])), {})


def vectors(n_views: int = 2, n: int = 8) -> Batch:
    generator = torch.Generator().manual_seed(0)
    return Batch(views=[torch.randn(n, 8, generator=generator) for _ in range(n_views)], index=torch.arange(n))


def linear_modules() -> tuple[Encoder, Projector]:
    """A linear encoder and a BN-free MLP projector; their embeddings spread below 1 (std about 0.1),
    where the variance hinge is active."""
    torch.manual_seed(0)
    encoder = LinearEncoder()
    return encoder, MLPProjector(encoder.output_dim, hidden_dim=8, output_dim=4, batch_norm=False)


def test_nt_xent_trains_on_two_processes_like_on_one():
    loss, gradients = check_objective_distributed(NTXent, {"temperature": 0.5}, vectors(), *linear_modules())

    assert math.isfinite(loss) and gradients["encoder.linear.weight"].abs().sum() > 0


def test_the_kit_catches_batch_statistics_that_are_not_gathered():
    with pytest.raises(AssertionError, match=r"LocalVariance: the loss is .* with 2 processes of 4 items instead of "
                                             r"one process of 8; .* must gather embeddings with "
                                             r"toolkit.gather_with_grad"):
        check_objective_distributed(LocalVariance, {}, vectors(), *linear_modules())


def test_the_kit_names_the_parameter_whose_gradient_differs():
    with pytest.raises(AssertionError, match=r"VarianceGatheredWithoutGradient: the gradient of "
                                             r"encoder.linear.weight differs by up to .* must gather embeddings"):
        check_objective_distributed(VarianceGatheredWithoutGradient, {}, vectors(), *linear_modules())


@pytest.mark.parametrize("evaluator", [KNNEvaluator, LinearProbeEvaluator])
def test_evaluator_schemas_conform(evaluator):
    check_factory_schema("evaluator", evaluator)


def test_the_kit_catches_an_encoder_that_misdeclares_its_output():
    class Wrong(Encoder):
        output_dim = 7

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 5)

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3)))

    with pytest.raises(AssertionError, match=r"output \(4, 5\), declared \(4, 7\)"):
        check_encoder(Wrong, {}, IMAGES)


def test_the_kit_catches_objective_state_that_is_not_checkpointed():
    class ForgetfulCounter(NTXent):
        def __init__(self, temperature: float = 0.5) -> None:
            super().__init__(temperature)
            self.calls = 0.0  # a plain attribute: not in the state_dict, lost on resume

        def forward(self, batch, encoder, projector):
            output = super().forward(batch, encoder, projector)
            return output._replace(loss=output.loss + self.calls)

        def after_step(self, step, total_steps, encoder, projector):
            self.calls += 1.0

    encoder = ResNet18(stem="cifar", width=4)
    projector = IdentityProjector(encoder.output_dim)
    batch = Batch(views=[torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)], index=torch.arange(4))
    with pytest.raises(AssertionError, match="resume cannot be exact"):
        check_objective(ForgetfulCounter, {}, batch, encoder, projector)


def test_the_kit_rejects_a_default_that_does_not_fit_its_annotation():
    def factory(size: int = "large"):  # type: ignore[assignment]
        return None

    with pytest.raises(AssertionError, match="default of 'size'"):
        check_factory_schema("augmentation", factory)
