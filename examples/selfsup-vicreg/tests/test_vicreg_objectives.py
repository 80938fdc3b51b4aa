"""The VICReg and Barlow Twins objectives pass selfsup's conformance kit (on one process and on
two), and the plugin module registers them and the package's recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from toolkit import Batch, Encoder
from toolkit.plugins import Plugins
from toolkit.projectors import IdentityProjector, MLPProjector
from toolkit.recipe import load_and_resolve
from toolkit.testing import check_factory_schema, check_objective, check_objective_distributed

import selfsup_vicreg.plugin
from selfsup_vicreg.losses import vicreg_loss
from selfsup_vicreg.objectives import BarlowTwins, VICReg

from conftest import SAMPLE_DATA, needs_sample_data

OBJECTIVES = [(VICReg, {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}),
              (BarlowTwins, {"lambda_offdiag": 5e-3})]


class FlatLinear(Encoder):
    """A deterministic stand-in encoder without batch norm: ``(N, 3, 4, 4) -> (N, 6)``. Defined at
    module level, so that ``check_objective_distributed`` can send it to other processes."""

    output_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 4 * 4, self.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


def views(n_views: int) -> list[Tensor]:
    """``n_views`` views of 8 items, ``(8, 3, 4, 4)``: the input of :class:`FlatLinear`."""
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(8, 3, 4, 4, generator=generator) for _ in range(n_views)]


@pytest.mark.parametrize(("factory", "params"), OBJECTIVES)
def test_objective_conforms(factory, params) -> None:
    torch.manual_seed(0)
    encoder = FlatLinear()
    projector = MLPProjector(encoder.output_dim, hidden_dim=16, output_dim=16, layers=3)

    check_objective(factory, params, Batch(views=views(2), index=torch.arange(8)), encoder, projector)


@pytest.mark.parametrize(("factory", "params"), OBJECTIVES)
def test_two_processes_compute_the_loss_and_gradients_of_the_whole_batch(factory, params) -> None:
    """Batch statistics over 2 x 4 items gathered with gradient equal those over 8 on one process.
    The projector has no batch norm: each item's embedding must not depend on the split."""
    torch.manual_seed(0)
    encoder = FlatLinear()
    projector = MLPProjector(encoder.output_dim, hidden_dim=16, output_dim=16, layers=3, batch_norm=False)

    check_objective_distributed(factory, params, Batch(views=views(2), index=torch.arange(8)), encoder, projector)


@pytest.mark.parametrize(("factory", "params"), OBJECTIVES)
def test_objective_signature_is_a_recipe_schema_with_the_paper_defaults(factory, params) -> None:
    fields = check_factory_schema("objective", factory)

    assert {name: field.default for name, field in fields.items()} == params


def test_vicreg_logs_its_unweighted_terms_and_their_weighted_sum_is_the_loss() -> None:
    torch.manual_seed(0)
    encoder, projector = FlatLinear(), IdentityProjector(FlatLinear.output_dim)
    output = VICReg(sim_coeff=2.0, std_coeff=3.0, cov_coeff=5.0)(
        Batch(views=views(2), index=torch.arange(8)), encoder, projector)
    terms = output.metrics

    assert set(terms) == {"invariance", "variance", "covariance"}
    assert output.loss.item() == pytest.approx(
        2 * terms["invariance"].item() + 3 * terms["variance"].item() + 5 * terms["covariance"].item())


def test_barlow_twins_logs_its_unweighted_terms() -> None:
    torch.manual_seed(0)
    encoder, projector = FlatLinear(), IdentityProjector(FlatLinear.output_dim)
    output = BarlowTwins(lambda_offdiag=0.5)(Batch(views=views(2), index=torch.arange(8)), encoder, projector)

    assert output.loss.item() == pytest.approx(
        output.metrics["on_diagonal"].item() + 0.5 * output.metrics["off_diagonal"].item())


def test_views_of_one_shape_are_encoded_in_a_single_forward_pass() -> None:
    encoder, projector = FlatLinear(), IdentityProjector(FlatLinear.output_dim)
    batch_sizes: list[int] = []
    encoder.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))

    VICReg()(Batch(views=views(2), index=torch.arange(8)), encoder, projector)

    assert batch_sizes == [16]


def test_more_than_two_views_average_the_loss_over_every_pair() -> None:
    torch.manual_seed(0)
    encoder, projector = FlatLinear(), IdentityProjector(FlatLinear.output_dim)
    three = views(3)
    z = [encoder(x) for x in three]
    expected = sum(vicreg_loss(z[a], z[b])[0] for a, b in [(0, 1), (0, 2), (1, 2)]) / 3

    loss = VICReg()(Batch(views=three, index=torch.arange(8)), encoder, projector).loss

    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("factory", [VICReg, BarlowTwins])
def test_a_single_view_is_refused_with_the_recipe_key_to_change(factory) -> None:
    encoder, projector = FlatLinear(), IdentityProjector(FlatLinear.output_dim)

    with pytest.raises(ValueError, match="augmentation.n_views"):
        factory()(Batch(views=views(1), index=torch.arange(8)), encoder, projector)


@pytest.mark.parametrize(("factory", "params"),
                         [(VICReg, {"cov_coeff": -1.0}), (BarlowTwins, {"lambda_offdiag": -0.1})])
def test_negative_weights_are_refused(factory, params) -> None:
    with pytest.raises(ValueError, match=f"objective.{next(iter(params))} must be 0 or more"):
        factory(**params)


def test_the_plugin_registers_both_objectives_and_the_shipped_recipes() -> None:
    plugins = Plugins()
    plugins.add("vicreg", selfsup_vicreg.plugin)
    info = plugins.infos["vicreg"]

    assert info.error is None
    assert info.components == {"objective": ["vicreg", "barlow-twins"]}
    assert [Path(path).name for path in info.recipes] == [
        "barlow-twins-cifar10.yaml", "vicreg-cifar10.yaml", "vicreg-tiny.yaml"]
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in info.recipes)


@needs_sample_data
@pytest.mark.parametrize("name", ["barlow-twins-cifar10.yaml", "vicreg-cifar10.yaml", "vicreg-tiny.yaml"])
def test_every_shipped_recipe_is_valid_once_given_a_data_path(plugins: Plugins, name: str) -> None:
    recipe = load_and_resolve(selfsup_vicreg.plugin.RECIPES / name, [f"data.path={SAMPLE_DATA}"], plugins)

    assert recipe.block("data")["path"] == str(SAMPLE_DATA)
    assert recipe.block("augmentation")["name"] == "simclr"
    assert recipe.block("encoder")["name"] == "resnet18"
