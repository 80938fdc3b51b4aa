"""Batch normalisation over the global batch, on any device and process-group backend.

PyTorch's :class:`torch.nn.SyncBatchNorm` runs only on GPUs (its statistics kernels are CUDA
ones); :class:`GlobalBatchNorm` computes the same statistics with two all-reduces that autograd
differentiates, so CPU (gloo) runs can use synchronized batch norm too and a multi-process run
normalises exactly like one process holding the whole batch. :func:`convert_sync_batchnorm`
picks PyTorch's implementation on CUDA and this one elsewhere.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from toolkit import distributed


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch of all processes.

    For ``x: (N, C, *)`` on each of ``W`` processes, with ``M`` the number of values per
    channel summed over processes (``W * N * prod(*)`` when shards are equal)::

        mu      = (1 / M) sum_{processes, n, *} x
        sigma^2 = (1 / M) sum_{processes, n, *} (x - mu)^2
        y       = (x - mu) / sqrt(sigma^2 + eps) * weight + bias

    The sums are all-reduced with gradient (the backward of a sum all-reduce is a sum
    all-reduce), so gradients are those of the global batch. Running statistics are updated
    with ``mu`` and the unbiased ``sigma^2 * M / (M - 1)``, as :class:`torch.nn.BatchNorm2d`
    does. In evaluation mode, or on one process, this is plain batch norm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"batch norm expects an input of shape (N, C, ...), got {tuple(input.shape)}: the layer "
                             f"before it must keep the batch dimension")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and distributed.is_distributed()):
            return super().forward(input)
        x = input.float()
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        sums = _all_reduce_sum(torch.cat([x.sum(dim=dims), count]))
        total = sums[-1].detach()
        mean = sums[:-1] / total
        centered = x - mean.reshape(shape)
        variance = _all_reduce_sum(centered.square().sum(dim=dims)) / total
        y = centered * torch.rsqrt(variance + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            self._update_running_statistics(mean.detach(), variance.detach(), float(total))
        return y.to(input.dtype)

    @torch.no_grad()
    def _update_running_statistics(self, mean: Tensor, variance: Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = variance * count / max(count - 1.0, 1.0)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every batch-norm layer synchronized across processes (in place where
    possible): :class:`torch.nn.SyncBatchNorm` on CUDA, :class:`GlobalBatchNorm` elsewhere.
    Parameters and buffers keep their names, so state dicts and exports are unchanged."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats, device=_device_of(module))
        if module.affine:
            with torch.no_grad():
                converted.weight.copy_(module.weight)
                converted.bias.copy_(module.bias)
            converted.weight.requires_grad_(module.weight.requires_grad)
            converted.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            converted.running_mean.copy_(module.running_mean)
            converted.running_var.copy_(module.running_var)
            converted.num_batches_tracked.copy_(module.num_batches_tracked)
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return None if tensor is None else tensor.device


def _all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of ``x`` over processes, differentiable."""
    return dist_functional.all_reduce(x, op=dist.ReduceOp.SUM)
