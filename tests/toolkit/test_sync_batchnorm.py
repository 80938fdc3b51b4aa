"""GlobalBatchNorm: on 2 gloo processes, exactly the batch norm of the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from toolkit.sync_batchnorm import GlobalBatchNorm, convert_sync_batchnorm

WORLD = 2


def reference(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output, input gradient, parameter gradients and running statistics of plain batch norm."""
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    x = x.clone().requires_grad_()
    y = norm(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, norm.weight.grad, norm.bias.grad, norm.running_mean, norm.running_var


def shard(rank: int, init_file: str, x: torch.Tensor, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    norm = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3, momentum=0.3)), torch.device("cpu"))[0]
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    rows = slice(rank * len(x) // WORLD, (rank + 1) * len(x) // WORLD)
    part = x[rows].clone().requires_grad_()
    y = norm(part)
    weights = torch.linspace(-1, 1, x.numel()).reshape(x.shape)[rows]
    (y * weights).sum().backward()
    for grad in (norm.weight.grad, norm.bias.grad):
        dist.all_reduce(grad)  # as DDP does (it averages; the summed loss here is not divided)
    # numpy arrays travel by value; tensors would travel as shared-memory file descriptors, which
    # the parent cannot fetch once this process has exited (a race seen on a loaded machine)
    tensors = (y, part.grad, norm.weight.grad, norm.bias.grad, norm.running_mean, norm.running_var)
    queue.put((rank, type(norm).__name__, *(t.detach().numpy().copy() for t in tensors)))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_normalise_and_differentiate_like_one_batch(tmp_path):
    x = torch.randn(8, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * 3 + 1
    context = mp.get_context("spawn")
    queue = context.Queue()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    processes = [context.Process(target=shard, args=(rank, str(tmp_path / "init"), x, queue)) for rank in range(WORLD)]
    for process in processes:
        process.start()
    received = sorted((queue.get(timeout=120) for _ in range(WORLD)), key=lambda r: r[0])
    results = [(rank, name, *map(torch.from_numpy, arrays)) for rank, name, *arrays in received]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    y, x_grad, weight_grad, bias_grad, running_mean, running_var = reference(x)
    assert all(r[1] == "GlobalBatchNorm" for r in results)
    assert torch.allclose(torch.cat([r[2] for r in results]), y, atol=1e-5)
    assert torch.allclose(torch.cat([r[3] for r in results]), x_grad, atol=1e-5)
    for result in results:
        assert torch.allclose(result[4], weight_grad, atol=1e-4)
        assert torch.allclose(result[5], bias_grad, atol=1e-4)
        assert torch.allclose(result[6], running_mean, atol=1e-6)
        assert torch.allclose(result[7], running_var, atol=1e-5)


def test_one_process_and_evaluation_mode_are_plain_batch_norm():
    torch.manual_seed(0)
    plain = nn.BatchNorm1d(4)
    converted = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(4)), torch.device("cpu"))[0]
    assert isinstance(converted, GlobalBatchNorm)
    x = torch.randn(6, 4)
    assert torch.allclose(converted(x), plain(x))
    plain.eval(), converted.eval()
    assert torch.allclose(converted(x), plain(x))
    assert set(converted.state_dict()) == set(plain.state_dict())  # exports and checkpoints keep their keys


def test_conversion_keeps_the_trained_state():
    norm = nn.BatchNorm1d(2)
    with torch.no_grad():
        norm.weight.fill_(2.0), norm.bias.fill_(-1.0), norm.running_mean.fill_(0.5), norm.running_var.fill_(4.0)
    converted = convert_sync_batchnorm(nn.Sequential(norm), torch.device("cpu"))[0]
    for key, value in norm.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
