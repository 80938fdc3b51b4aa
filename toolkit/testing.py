"""Conformance kit: checks a plugin's own tests call on every component it registers.

Each ``check_*`` function raises ``AssertionError`` with a message that names the component and
the broken rule, and returns what it computed so a test can look further::

    from toolkit.testing import check_encoder, check_objective

    def test_my_encoder_conforms():
        check_encoder(MyEncoder, {"width": 8}, example=[torch.rand(3, 32, 32)] * 4)

Factories are passed with their recipe parameters (not instances) so that the kit can build a
second copy for the determinism and ``state_dict`` round-trip checks, or build the component in
other processes (:func:`check_objective_distributed`).
"""

from __future__ import annotations

import copy
import math
import pickle
import queue as queues
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from toolkit import schema
from toolkit.components import KINDS, fields_of, instantiate, nested_kind
from toolkit.interfaces import Augmentation, Batch, DataSource, Encoder, Objective, ObjectiveOutput, Projector

Factory = Callable[..., Any]


def check_factory_schema(kind: str, factory: Factory) -> dict[str, schema.Field]:
    """The factory's signature is a valid recipe schema and its defaults fit their types."""
    try:
        fields = fields_of(kind, factory)
    except (TypeError, NameError) as error:
        raise AssertionError(f"{_name(factory)}: its signature is not a recipe schema: {error}") from None
    for field in fields.values():
        if not field.required and field.default is not None and nested_kind(field.annotation) is None:
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
    params = _arguments("encoder", factory, params)
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
    params = _arguments("projector", factory, params)
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
    params = _arguments("augmentation", factory, params)
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
    params = _arguments("datasource", factory, params)
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
    params = _arguments("objective", factory, params)
    available = dict(encoder=encoder, projector=projector, **injected)
    torch.manual_seed(0)
    objective: Objective = instantiate("objective", factory, params, available)
    encoder.zero_grad(set_to_none=True)
    output = objective(batch, encoder, projector)
    assert output.loss.dim() == 0 and math.isfinite(output.loss.item()), (
        f"{_name(factory)}: loss must be a finite scalar, got {output.loss}")
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), (
        f"{_name(factory)}: the loss does not backpropagate into the encoder")
    for key, value in output.metrics.items():
        assert float(value) == float(value), f"{_name(factory)}: metric {key!r} is NaN"
    objective.after_step(1, 10, encoder, projector)
    state = copy.deepcopy(objective.state_dict())
    twin = instantiate("objective", factory, params, available)
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


DISTRIBUTED_TIMEOUT_S = 120.0
"""How long :func:`check_objective_distributed` waits for its processes (spawning them imports
torch) and how long a collective may block before gloo gives up."""


def check_objective_distributed(
    factory: Factory,
    params: dict[str, Any],
    batch: Batch,
    encoder: Encoder,
    projector: Projector,
    world_size: int = 2,
    atol: float = 1e-5,
    **injected: Any,
) -> tuple[float, dict[str, Tensor]]:
    """On ``world_size`` processes with ``B`` items each, the objective trains exactly as on one
    process with the whole batch of ``N = world_size * B`` items.

    Under ``torchrun`` process ``r`` sees the rows ``r*B:(r+1)*B`` of every view, computes its
    loss ``L_r`` and backpropagates it; DDP then averages parameter gradients over processes,
    ``g = 1/W sum_r dL_r/dtheta``, and the engine logs ``1/W sum_r L_r``. With ``L`` the loss of
    the whole batch on one process, this check asserts ``1/W sum_r L_r = L`` and ``g = dL/dtheta``
    for every parameter of the encoder, the projector and the objective. Two designs pass:

    - a mean of per-item terms (BYOL, SimSiam): ``L_r`` is the mean over the shard, and the mean
      of the shards' means is the mean over the batch;
    - a loss of the whole batch (negatives from every item, batch statistics as in VICReg or
      Barlow Twins): every process gathers the embeddings with :func:`toolkit.gather_with_grad`
      and computes ``L_r = L``. The gather's backward sums ``dL/dz`` over processes, which are
      equal, so process ``r`` gets ``W`` times the part of ``dL/dtheta`` that flows through its
      own rows, and DDP's ``1/W`` average of the parts is exactly ``dL/dtheta``.

    A loss computed from local batch statistics or local negatives fails: its value and
    gradients depend on how the batch is split.

    The processes are spawned (start method ``spawn``) and join a gloo group on CPU; each gets a
    copy of ``encoder`` and ``projector`` (the same weights) and builds the objective under the
    same seed as the single-process reference, so ``factory``, ``params``, the modules and the
    ``injected`` values must be picklable: module-level classes, not ones defined in a test
    function. ``batch``: views ``(N, ...)`` tensors or dicts of them; ``index``, ``labels``,
    ``seeds`` and ``extras`` tensors with ``N`` rows are split with the views; ``N`` must be a
    multiple of ``world_size``. The encoder and projector must not depend on the batch (no batch
    norm, unless synchronised), or the two runs compute different functions: a small linear
    encoder on ``(N, 8)`` vectors, ``N = 8``, takes a few seconds. Values agree within
    ``atol`` plus ``1e-4`` relative.

    Returns the single-process loss and gradients (``encoder.<name>``, ``projector.<name>``,
    ``objective.<name>``; zeros for a parameter the loss does not reach).
    """
    check_factory_schema("objective", factory)
    params = _arguments("objective", factory, params)
    n = len(batch)
    assert n % world_size == 0 and n >= world_size, (
        f"{_name(factory)}: a batch of {n} items cannot be split evenly over {world_size} processes")
    loss, gradients = _loss_and_gradients(factory, params, batch, copy.deepcopy(encoder), copy.deepcopy(projector),
                                          injected)
    shared = _mean_over_processes(factory, params, batch, encoder, projector, injected, world_size)
    cause = (f"with {world_size} processes of {n // world_size} items instead of one process of {n}; an "
             f"objective that needs the whole batch must gather embeddings with toolkit.gather_with_grad "
             f"(and the encoder and projector must have no unsynchronised batch norm)")
    assert math.isclose(shared["loss"].item(), loss.item(), rel_tol=1e-4, abs_tol=atol), (
        f"{_name(factory)}: the loss is {shared['loss'].item():.6g} (mean over processes) instead of "
        f"{loss.item():.6g} {cause}")
    for name, gradient in gradients.items():
        if not torch.allclose(shared[name], gradient, rtol=1e-4, atol=atol):
            difference = (shared[name] - gradient).abs().max().item()
            raise AssertionError(f"{_name(factory)}: the gradient of {name} differs by up to {difference:.3g} "
                                 f"{cause}")
    return loss.item(), gradients


def _loss_and_gradients(
    factory: Factory,
    params: dict[str, Any],
    batch: Batch,
    encoder: Encoder,
    projector: Projector,
    injected: dict[str, Any],
) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective's loss on ``batch`` and the gradient of every parameter, by name."""
    for module in (encoder, projector):
        module.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    objective: Objective = instantiate("objective", factory, params, dict(encoder=encoder, projector=projector,
                                                                          **injected))
    torch.manual_seed(1)
    loss = objective(batch, encoder, projector).loss
    loss.backward()
    gradients: dict[str, Tensor] = {}
    seen: set[int] = set()
    modules: dict[str, nn.Module] = {"encoder": encoder, "projector": projector, "objective": objective}
    for prefix, module in modules.items():
        for name, parameter in module.named_parameters():
            if id(parameter) not in seen:  # an objective may hold the encoder itself as a submodule
                seen.add(id(parameter))
                grad = parameter.grad
                gradients[f"{prefix}.{name}"] = torch.zeros_like(parameter) if grad is None else grad.detach().clone()
    return loss.detach(), gradients


def _mean_over_processes(
    factory: Factory,
    params: dict[str, Any],
    batch: Batch,
    encoder: Encoder,
    projector: Projector,
    injected: dict[str, Any],
    world_size: int,
) -> dict[str, Tensor]:
    """``loss`` and the gradients, averaged over ``world_size`` spawned processes (as DDP does)."""
    rows = len(batch) // world_size
    try:  # pickled here, by value: a clear error in this process, and no shared memory to outlive
        payloads = [pickle.dumps((factory, params, _rows(batch, slice(r * rows, (r + 1) * rows), len(batch)),
                                  encoder, projector, injected)) for r in range(world_size)]
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise AssertionError(f"{_name(factory)}: the factory, its parameters, the encoder, the projector and the "
                             f"injected values must be picklable (module-level classes) to reach other processes: "
                             f"{error}") from None
    context = mp.get_context("spawn")
    results = context.Queue()
    with tempfile.TemporaryDirectory() as directory:
        store = Path(directory) / "store"
        processes = [context.Process(target=_shard, args=(r, world_size, str(store), payloads[r], results), daemon=True)
                     for r in range(world_size)]
        for process in processes:
            process.start()
        failure: str | None = "interrupted"
        try:
            failure, arrays = _first_report(processes, results)
        finally:
            for process in processes:
                process.join(timeout=DISTRIBUTED_TIMEOUT_S if failure is None else 1)
                if process.is_alive():  # blocked in a collective a failed process never joined
                    process.terminate()
                    process.join()
    if failure is not None:
        raise AssertionError(f"{_name(factory)}: on {world_size} processes: {failure}")
    # Rank 0's results are all-reduced, so every process computed its shard and took part; an exit
    # status other than 0 after that comes from tearing the process group down (seen under load, a
    # peer's file store already gone), not from the objective.
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def _first_report(processes: list[Any], results: Any) -> tuple[str | None, dict[str, Any]]:
    """Rank 0's results, or the first failure a process reports (or its death without a word)."""
    deadline = time.monotonic() + DISTRIBUTED_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.5)
        except queues.Empty:
            dead = [r for r, process in enumerate(processes) if process.exitcode not in (None, 0)]
            if dead:
                return f"process {dead[0]} died with exit code {processes[dead[0]].exitcode}", {}
    return f"no result within {DISTRIBUTED_TIMEOUT_S:.0f} s", {}


def _shard(rank: int, world_size: int, store: str, payload: bytes, results: Any) -> None:
    """One process: its shard's loss and gradients, summed over processes and divided by ``W``.

    Results travel as numpy arrays (by value): a tensor would travel as a shared-memory handle
    that the parent cannot open once this process has exited."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=DISTRIBUTED_TIMEOUT_S))
    try:
        factory, params, batch, encoder, projector, injected = pickle.loads(payload)
        loss, gradients = _loss_and_gradients(factory, params, batch, encoder, projector, injected)
        averaged = {"loss": loss, **gradients}
        for value in averaged.values():
            dist.all_reduce(value)
            value /= world_size
    except Exception:  # noqa: BLE001 - the parent reports it with the traceback
        results.put((f"process {rank} failed:\n{traceback.format_exc()}", {}))
        dist.destroy_process_group()
        return
    if rank == 0:
        results.put((None, {name: value.numpy().copy() for name, value in averaged.items()}))
    dist.barrier()
    dist.destroy_process_group()


def _rows(x: Any, rows: slice, n: int) -> Any:
    """``rows`` of every tensor with ``n`` rows in ``x`` (a batch, its views, dicts, lists)."""
    if isinstance(x, Batch):
        return Batch(views=_rows(x.views, rows, n), index=_rows(x.index, rows, n), labels=_rows(x.labels, rows, n),
                     extras=_rows(x.extras, rows, n), seeds=_rows(x.seeds, rows, n))
    if isinstance(x, Tensor):
        return x[rows].clone() if x.dim() > 0 and x.shape[0] == n else x
    if isinstance(x, dict):
        return {key: _rows(value, rows, n) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_rows(value, rows, n) for value in x)
    return x


def _arguments(kind: str, factory: Factory, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the engine would pass them: validated, defaults filled in, nested component
    blocks (``frames: resnet18``) built from the installed plugins. Injected values given in
    ``params`` (a data source's ``device``) pass unchanged."""
    fields = fields_of(kind, factory)
    nested = {key: nested_kind(field.annotation) for key, field in fields.items() if nested_kind(field.annotation)}
    injected = {k: v for k, v in params.items() if k in KINDS[kind].injected}
    arguments = injected | schema.validate({k: v for k, v in params.items() if k not in nested and k not in injected},
                                           {k: f for k, f in fields.items() if k not in nested})
    if nested:
        from toolkit.plugins import default_plugins
        from toolkit.recipe import build

        for key, inner_kind in nested.items():
            value = params.get(key, fields[key].default)
            arguments[key] = value if isinstance(value, KINDS[inner_kind].interface) else build(
                default_plugins(), inner_kind, value)
    return arguments


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
