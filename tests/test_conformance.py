"""The built-in components pass the conformance kit (toolkit.testing) that plugins use, and the
kit catches components that break the interfaces."""

from __future__ import annotations

import pytest
import torch

from selfsup_image.augmentations import SimCLRAugmentation
from selfsup_image.datasources import JpegNpz
from selfsup_image.encoders import ResNet18, ResNet50
from selfsup_image.objectives import NTXent
from toolkit.evaluation import KNNEvaluator, LinearProbeEvaluator
from toolkit.interfaces import Batch, Encoder
from toolkit.projectors import IdentityProjector, MLPProjector
from toolkit.testing import (
    check_augmentation,
    check_datasource,
    check_encoder,
    check_factory_schema,
    check_objective,
    check_projector,
)

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

        def after_step(self, step, total_steps):
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
