"""Distributed training support: process group setup and the one gather primitive losses use.

Under ``torchrun`` every process trains on its shard of each global batch. A loss that needs the
whole batch (global negatives or positives) calls :func:`gather_with_grad` on its embeddings;
everything else is plain DDP. On one process every function here is the identity.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def init_from_environment() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); False on one process.

    NCCL when CUDA is available, gloo otherwise; each process uses GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


def shutdown() -> None:
    """Leave the process group (every process, at the end of a run): exiting with gloo's threads
    still running can abort the process ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files, logs and evaluates (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_with_grad(x: Tensor, dim: int = 0) -> Tensor:
    """Concatenate ``x`` from every process along ``dim``, in rank order, keeping gradients.

    ``x: (..., B, ...)`` per process -> ``(..., W * B, ...)``. Forward is an all-gather; backward
    sums the incoming gradient over all processes (each computed its loss from every slice)
    and returns this process's slice. With DDP averaging parameter gradients over ``W``
    processes, this gives exactly the gradient of the loss over the global batch; leaving out
    the sum (a bug that has shipped in widely used libraries) makes gradients ``W`` times too
    small for the other processes' terms.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x.contiguous(), dim)


def all_gather_object(value: Any) -> list[Any]:
    """``value`` from every process, in rank order (``[value]`` on one process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_mean(value: float) -> float:
    """The mean of a scalar over processes (the scalar itself on one process)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:
        ctx.dim, ctx.size = dim, x.shape[dim]
        pieces = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, x)
        return torch.cat(pieces, dim=dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.narrow(ctx.dim, dist.get_rank() * ctx.size, ctx.size), None
