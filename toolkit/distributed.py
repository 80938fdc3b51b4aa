"""Distributed training support: process group setup and the one gather primitive losses use.

Under ``torchrun`` every process trains on its shard of each global batch. A loss that needs the
whole batch (global negatives or positives) calls :func:`gather_with_grad` on its embeddings;
state every process must hold identically (MoCo's queue, a memory bank) is updated from
:func:`all_gather`; a random draw that must agree across processes (a shuffle, sampled
negatives) is made for the global batch and shared with :func:`broadcast_from_main`.
Everything else is plain DDP. On one process every function here is the identity.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_autograd
from torch import Tensor

from toolkit.errors import RecipeError


def init_from_environment(device: str = "auto") -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); False on one process.

    ``device`` is ``trainer.device``: NCCL when it means CUDA (``auto`` with a GPU present,
    ``cuda``), each process on GPU ``LOCAL_RANK``; gloo otherwise (CPU processes, also on a GPU
    machine with ``trainer.device=cpu``).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        on_gpus = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if on_gpus:
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise RecipeError(f"process {local_rank} of this node has no GPU of its own ({gpus} visible): start at "
                                 f"most {gpus} processes per node (--nproc), or train on CPU processes with "
                                 f"trainer.device=cpu")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if on_gpus else "gloo")
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
    small for the other processes' terms. (PyTorch's ``torch.distributed.nn.functional.all_gather``
    does the exchange: its backward is that sum, a reduce-scatter.)
    """
    if not is_distributed():
        return x
    return torch.cat(distributed_autograd.all_gather(x), dim=dim)


@torch.no_grad()
def all_gather(x: Tensor, dim: int = 0) -> Tensor:
    """Concatenate ``x`` from every process along ``dim``, in rank order, without gradient.

    For tensors that update state every process must hold identically (keys entering a queue,
    features entering a memory bank). Every process must pass the same shape.
    """
    if not is_distributed():
        return x
    sent = _on_backend_device(x.contiguous())
    pieces = [torch.empty_like(sent) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, sent)
    return torch.cat(pieces, dim=dim).to(x.device)


@torch.no_grad()
def broadcast_from_main(x: Tensor) -> Tensor:
    """Rank 0's ``x`` on every process.

    For random draws that must agree across processes: every process draws for the global
    batch (so one process draws exactly what a single-process run would) and keeps rank 0's.
    """
    if not is_distributed():
        return x
    shared = _on_backend_device(x.clone())
    dist.broadcast(shared, src=0)
    return shared.to(x.device)


def all_gather_object(value: Any) -> list[Any]:
    """``value`` from every process, in rank order (``[value]`` on one process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over processes of every value (the values themselves on one process). Every
    process must pass the same keys."""
    if not is_distributed():
        return values
    keys = sorted(values)
    tensor = _on_backend_device(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    dist.all_reduce(tensor)
    return {k: float(v) / world_size() for k, v in zip(keys, tensor.tolist())}


def _on_backend_device(x: Tensor) -> Tensor:
    """``x`` where the process group's backend can send it: CUDA for NCCL, as is for gloo."""
    return x.cuda() if dist.get_backend() == "nccl" and not x.is_cuda else x
