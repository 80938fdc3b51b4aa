"""LARS against its update rule, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.optim import LARS, parameter_groups, warmup_cosine


def test_lars_step_follows_the_trust_ratio_update():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    weight.grad = torch.tensor([0.6, 0.8])
    LARS([weight], lr=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.01).step()
    w, g = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8]) + 0.5 * torch.tensor([3.0, 4.0])
    trust = 0.01 * w.norm() / g.norm()
    assert torch.allclose(weight.detach(), w - 0.1 * trust * g)


def test_lars_excluded_groups_take_plain_sgd_steps():
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    bias.grad = torch.tensor([2.0])
    LARS([{"params": [bias], "lars_exclude": True, "weight_decay": 0.0}], lr=0.1).step()
    assert torch.allclose(bias.detach(), torch.tensor([0.8]))


def test_biases_and_norms_get_no_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = parameter_groups([model])
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (3, 1.0), (4, 1.0), (14, 0.1)])
def test_warmup_cosine_factor(step, expected):
    factor = warmup_cosine(total_steps=14, warmup_steps=4, min_lr_ratio=0.1)
    assert math.isclose(factor(step), expected, abs_tol=1e-9)


def test_cosine_midpoint_is_halfway_to_the_floor():
    factor = warmup_cosine(total_steps=20, warmup_steps=0, min_lr_ratio=0.0)
    assert math.isclose(factor(10), 0.5)
