"""Process-wide CPU settings applied by the engine."""

from __future__ import annotations

import sys

import pytest
import torch

from toolkit import cpu


@pytest.fixture
def restore_denormals():
    yield
    torch.set_flush_denormal(False)


def test_flush_denormal_turns_underflowing_products_into_zero(restore_denormals):
    cpu.configure(flush_denormal=True, tune_malloc=False)
    assert (torch.tensor([1e-30]) * 1e-10).item() == 0.0
    cpu.configure(flush_denormal=False, tune_malloc=False)
    assert (torch.tensor([1e-30]) * 1e-10).item() > 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies to Linux only")
def test_malloc_thresholds_are_accepted_by_glibc():
    assert cpu.tune_glibc_malloc() is True
