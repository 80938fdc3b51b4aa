"""Conformance kit: checks a plugin's own tests call on every component it registers.

Each ``check_*`` function raises ``AssertionError`` with a message that names the component and
the broken rule, and returns what it computed so a test can look further::

    from toolkit.testing import check_encoder, check_objective

    def test_my_encoder_conforms():
        check_encoder(MyEncoder, {"width": 8}, example=[torch.rand(3, 32, 32)] * 4)

Factories are passed with their recipe parameters (not instances) so that the kit can build a
second copy for the determinism and ``state_dict`` round-trip checks.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from toolkit import schema
from toolkit.interfaces import Augmentation, Batch, DataSource, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.plugins import INJECTED

Factory = Callable[..., Any]


def check_factory_schema(kind: str, factory: Factory) -> dict[str, schema.Field]:
    """The factory's signature is a valid recipe schema and its defaults fit their types."""
    try:
        fields = schema.fields_of(factory, INJECTED.get(kind, frozenset()))
    except (TypeError, NameError) as error:
        raise AssertionError(f"{_name(factory)}: its signature is not a recipe schema: {error}") from None
    for field in fields.values():
        if not field.required and field.default is not None:
            try:
                schema.coerce(field.default, field.annotation, field.name)
            except schema.SchemaError as error:
                raise AssertionError(f"{_name(factory)}: default of {field.name!r} does not fit its annotation: "
                                     f"{error.message}") from None
    return fields


def check_encoder(factory: Factory, params: dict[str, Any], example: Sequence[Any]) -> Tensor:
    """``example`` (views of a few items) collates and encodes to ``output_dim`` features,
    deterministically in eval mode, and a second instance loading the ``state_dict`` agrees."""
    check_factory_schema("encoder", factory)
    torch.manual_seed(0)
    encoder: Encoder = factory(**params).eval()
    assert isinstance(encoder, Encoder), f"{_name(factory)} must return a toolkit.interfaces.Encoder"
    x = encoder.collate()(list(example))
    with torch.no_grad():
        h = encoder(x)
        assert torch.equal(h, encoder(x)), f"{_name(factory)}: forward is not deterministic in eval mode"
    n, dim = len(example), encoder.output_dim
    expected = (n, dim) if encoder.output_kind == "vector" else None
    if expected is not None:
        assert tuple(h.shape) == expected, f"{_name(factory)}: output {tuple(h.shape)}, declared {expected}"
    else:
        assert h.dim() == 3 and h.shape[0] == n and h.shape[2] == dim, (
            f"{_name(factory)}: a sequence encoder must return (N, T, {dim}), got {tuple(h.shape)}")
    assert h.is_floating_point(), f"{_name(factory)}: features must be floating point, got {h.dtype}"
    torch.manual_seed(1)
    twin = factory(**params).eval()
    twin.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        assert torch.allclose(twin(x), h, atol=1e-6), f"{_name(factory)}: state_dict round trip changes the output"
    return h


def check_projector(factory: Factory, params: dict[str, Any], input_dim: int, n: int = 4) -> Tensor:
    """``(N, input_dim) -> (N, output_dim)`` and the ``state_dict`` round trip."""
    check_factory_schema("projector", factory)
    projector: Projector = factory(input_dim=input_dim, **params).eval()
    h = torch.randn(n, input_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = projector(h)
    assert tuple(z.shape) == (n, projector.output_dim), (
        f"{_name(factory)}: output {tuple(z.shape)}, declared (N, {projector.output_dim})")
    twin = factory(input_dim=input_dim, **params).eval()
    twin.load_state_dict(projector.state_dict())
    with torch.no_grad():
        assert torch.allclose(twin(h), z, atol=1e-6), f"{_name(factory)}: state_dict round trip changes the output"
    return z


def check_augmentation(factory: Factory, params: dict[str, Any], item: Any) -> list[Any]:
    """``n_views`` views per item, reproducible under a seed; a deterministic eval twin."""
    check_factory_schema("augmentation", factory)
    augmentation: Augmentation = factory(**params)
    torch.manual_seed(0)
    views = augmentation(item)
    assert len(views) == augmentation.n_views, (
        f"{_name(factory)}: made {len(views)} views, declares n_views={augmentation.n_views}")
    torch.manual_seed(0)
    again = augmentation(item)
    assert all(_equal(a, b) for a, b in zip(views, again)), (
        f"{_name(factory)}: views must depend only on torch's random generator (seeded per item by the engine)")
    assert _equal(augmentation.eval_transform(item), augmentation.eval_transform(item)), (
        f"{_name(factory)}: eval_transform must be deterministic")
    return views


def check_datasource(factory: Factory, params: dict[str, Any]) -> DataSource:
    """Items are indexable, labels (if any) are int64 ``(len,)`` below ``num_classes``."""
    check_factory_schema("datasource", factory)
    source: DataSource = factory(**params)
    assert len(source) > 0, f"{_name(factory)}: the data source is empty"
    source[0], source[len(source) - 1]  # noqa: B018 - both ends must load
    if source.labels is not None:
        assert source.labels.dtype == torch.int64 and tuple(source.labels.shape) == (len(source),), (
            f"{_name(factory)}: labels must be int64 of shape ({len(source)},)")
        assert source.num_classes is not None and int(source.labels.max()) < source.num_classes, (
            f"{_name(factory)}: num_classes must exceed every label")
    return source


def check_objective(
    factory: Factory,
    params: dict[str, Any],
    batch: Batch,
    encoder: Encoder,
    projector: Projector,
    **injected: Any,
) -> ObjectiveOutput:
    """A finite scalar loss that backpropagates into the encoder; ``after_step`` runs; state the
    objective owns (queues, targets, banks) survives a ``state_dict`` round trip exactly."""
    check_factory_schema("objective", factory)
    available = _accepted(factory, dict(encoder=encoder, projector=projector, **injected))
    torch.manual_seed(0)
    objective: Objective = factory(**params, **available)
    encoder.zero_grad(set_to_none=True)
    output = objective(batch, encoder, projector)
    assert output.loss.dim() == 0 and math.isfinite(output.loss.item()), (
        f"{_name(factory)}: loss must be a finite scalar, got {output.loss}")
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), (
        f"{_name(factory)}: the loss does not backpropagate into the encoder")
    for key, value in output.metrics.items():
        assert float(value) == float(value), f"{_name(factory)}: metric {key!r} is NaN"
    objective.after_step(1, 10)
    state = copy.deepcopy(objective.state_dict())
    twin = factory(**params, **available)
    twin.load_state_dict(state)
    losses = []
    for candidate in (objective, twin):  # same state, same seed: the same next loss
        torch.manual_seed(2)
        with torch.no_grad():
            losses.append(candidate(batch, encoder, projector).loss)
    assert torch.allclose(losses[0], losses[1]), (
        f"{_name(factory)}: after a state_dict round trip the next loss differs ({losses[0]} vs {losses[1]}): "
        f"state changed by forward or after_step lives outside parameters and buffers, so resume cannot be exact")
    return output


def _accepted(factory: Factory, available: dict[str, Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    names = set(inspect.signature(target).parameters)
    return {k: v for k, v in available.items() if k in names}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _name(factory: Factory) -> str:
    return getattr(factory, "__qualname__", repr(factory))
