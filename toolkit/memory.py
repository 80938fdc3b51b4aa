"""Memories of past embeddings, held in buffers so that checkpoints hold them and resume is exact.

- :class:`KeyQueue`: MoCo's dictionary, a fixed-size FIFO queue of keys (also SwAV's queue).
- :class:`MemoryBank`: InstDisc's bank, one vector per data-set item, updated by momentum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KeyQueue(nn.Module):
    """``size`` keys of dimension ``dim`` (He et al. 2020, section 3.2), oldest overwritten first.

    ``keys: (size, dim)`` starts as random unit vectors, as in MoCo; ``pointer`` is the slot the
    next key goes to. Both are buffers, so checkpoints hold the queue and resume is exact.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys: (B, dim)`` into the next ``B`` slots, wrapping around the end.

        A batch larger than the queue keeps its last ``size`` keys.
        """
        keys = keys.detach().to(self.keys.dtype)[-len(self):]
        slots = (self.pointer + torch.arange(keys.shape[0], device=self.keys.device)) % len(self)
        self.keys[slots] = keys
        self.pointer.copy_((self.pointer + keys.shape[0]) % len(self))

    def oldest_first(self) -> Tensor:
        """The keys ``(size, dim)`` from the oldest to the newest."""
        return torch.roll(self.keys, -int(self.pointer), dims=0)


class MemoryBank(nn.Module):
    """``vectors: (size, dim)`` unit vectors, one per data-set item, initialised at random
    (Wu et al. 2018, section 3.2)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("vectors", F.normalize(torch.randn(size, dim), dim=1))

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @torch.no_grad()
    def update(self, index: Tensor, features: Tensor, momentum: float) -> None:
        """``v_i <- normalise(momentum * v_i + (1 - momentum) * normalise(f_i))`` for ``index: (N,)``,
        ``features: (N, dim)``."""
        mixed = momentum * self.vectors[index] + (1 - momentum) * F.normalize(features.float(), dim=1)
        self.vectors[index] = F.normalize(mixed, dim=1)
