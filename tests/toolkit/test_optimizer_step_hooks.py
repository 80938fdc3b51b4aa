"""A DINO-style plugin built from hooks alone: a projector head whose last layer stays frozen
for its first steps, and a weight-decay schedule, both in ``on_before_optimizer_step``
(Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", section 3.1
and appendix: the last layer is frozen during the first epoch; weight decay follows a cosine
from 0.04 to 0.4). No engine code knows about either."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from toolkit import Projector, RunContext, hookimpl
from toolkit.engine import Trainer
from toolkit.limits import NonNegative, Positive
from toolkit.recipe import load_and_resolve


class FrozenLastLayerHead(Projector):
    """``Linear -> GELU -> last_layer``; ``freeze_last_layer`` counts the optimizer steps during which
    ``last_layer`` is not updated."""

    def __init__(self, input_dim: int, hidden_dim: Positive = 16, output_dim: Positive = 8,
                 freeze_last_layer: NonNegative = 3) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.GELU())
        self.last_layer = nn.Linear(hidden_dim, output_dim)
        self.output_dim, self.freeze_last_layer = output_dim, freeze_last_layer

    def forward(self, h: Tensor) -> Tensor:
        return self.last_layer(self.hidden(h))


def cosine_weight_decay(step: int, total_steps: int, start: float = 0.04, end: float = 0.4) -> float:
    """DINO's schedule: ``end + (start - end) * (1 + cos(pi * (step - 1) / (total_steps - 1))) / 2``."""
    return end + (start - end) * (1 + math.cos(math.pi * (step - 1) / max(total_steps - 1, 1))) / 2


class DinoStylePlugin:
    """Registers the head; freezes its last layer and schedules weight decay before each optimizer step."""

    @hookimpl
    def register_projectors(self, register):
        register("frozen-last-layer-head", FrozenLastLayerHead)

    @hookimpl
    def on_before_optimizer_step(self, run: RunContext, step: int) -> None:
        if not isinstance(run.projector, FrozenLastLayerHead):
            return  # a hook sees every run: act on this plugin's components only
        if step <= run.projector.freeze_last_layer:
            for parameter in run.projector.last_layer.parameters():
                parameter.grad = None  # the optimizer skips it: no gradient, no decay, no momentum
        for group in run.optimizer.param_groups:
            if group["weight_decay"] > 0:
                group["weight_decay"] = cosine_weight_decay(step, run.total_steps)


class Recorder:
    def __init__(self) -> None:
        self.last_layer: list[Tensor] = []
        self.hidden: list[Tensor] = []
        self.weight_decay: list[float] = []

    @hookimpl
    def on_step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        if not isinstance(run.projector, FrozenLastLayerHead):
            return
        self.last_layer.append(run.projector.last_layer.weight.detach().clone())
        self.hidden.append(run.projector.hidden[0].weight.detach().clone())
        self.weight_decay.append(run.optimizer.param_groups[0]["weight_decay"])


@pytest.fixture
def dino_style(plugins):
    plugins.add("dino-style", DinoStylePlugin())
    recorder = Recorder()
    plugins.manager.register(recorder, name="recorder")
    yield recorder
    plugins.manager.unregister(name="recorder")
    plugins.remove("dino-style")


def test_a_plugin_freezes_the_last_layer_for_its_first_steps_through_hooks_alone(dino_style, plugins, tiny_recipe,
                                                                                  tmp_path):
    recipe = load_and_resolve(tiny_recipe, ["projector={name: frozen-last-layer-head, freeze_last_layer: 3}",
                                            "schedule.max_steps=5", "eval.evaluators=[]",
                                            "optimizer.weight_decay=0.04"], plugins)
    trainer = Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w"))
    initial = trainer.model.projector.last_layer.weight.detach().clone()
    trainer.fit()

    last, hidden = dino_style.last_layer, dino_style.hidden
    assert all(torch.equal(weights, initial) for weights in last[:3])  # frozen for steps 1-3
    assert not torch.equal(last[3], initial) and not torch.equal(last[4], last[3])  # trained from step 4
    assert not torch.equal(hidden[0], hidden[1])  # the rest of the head trains all along
    assert dino_style.weight_decay == pytest.approx([cosine_weight_decay(s, 5) for s in range(1, 6)])
    assert dino_style.weight_decay[0] == pytest.approx(0.04) and dino_style.weight_decay[-1] == pytest.approx(0.4)


def test_the_hook_leaves_runs_with_other_projectors_alone(dino_style, plugins, tiny_recipe, tmp_path):
    recipe = load_and_resolve(tiny_recipe, ["schedule.max_steps=2", "eval.evaluators=[]",
                                            "optimizer.weight_decay=0.01"], plugins)
    trainer = Trainer.from_recipe(recipe, plugins, tmp_path / "run", log=open("/dev/null", "w"))
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.01
