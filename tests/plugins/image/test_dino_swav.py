"""DINO and SwAV (selfsup_image.dino, selfsup_image.swav): the losses against naive loops, the
centre, the teacher-temperature and weight-decay schedules, Sinkhorn's marginals, the conformance
kit on one and two processes, and the tiny recipes through the engine with their hooks (the last
layer and the prototypes frozen for their first steps)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from selfsup_image import plugin as image_plugin
from selfsup_image.dino import (DINO, DINOHead, cosine_weight_decay, dino_before_optimizer_step, dino_loss,
                                teacher_temperature)
from selfsup_image.encoders import ResNet18
from selfsup_image.simclr import NTXent
from selfsup_image.swav import SwAV, sinkhorn_knopp, swapped_prediction_loss
from toolkit import RunContext, hookimpl
from toolkit.engine import Trainer
from toolkit.interfaces import Batch, Encoder, ObjectiveOutput, Projector
from toolkit.optim import parameter_groups
from toolkit.projectors import MLPProjector
from toolkit.recipe import load_and_resolve
from toolkit.testing import check_objective, check_objective_distributed, check_projector

from conftest import RECIPES
from helpers import assert_same_state, kill_at

QUIET = open(os.devnull, "w")


class TinyLinearEncoder(Encoder):
    """``(N, 8) -> (N, 6)`` without batch norm, the same function of each item on any split of the
    batch. Module-level, so that check_objective_distributed can send it to other processes."""

    output_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, self.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class DINOTwice(DINO):
    """DINO whose forward first runs once without gradient: the loss it returns uses the centre that
    the first pass set from the teacher's outputs, so it matches across process counts only if the
    centre is the global batch's."""

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        with torch.no_grad():
            super().forward(batch, encoder, projector)
        return super().forward(batch, encoder, projector)


class SwAVTwice(SwAV):
    """SwAV whose forward first runs once without gradient, filling the queue: the loss it returns
    takes its codes from the queue and the batch together."""

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        with torch.no_grad():
            super().forward(batch, encoder, projector)
        return super().forward(batch, encoder, projector)


class Recorder:
    """What every step of a DINO or SwAV run left behind."""

    def __init__(self) -> None:
        self.frozen: list[Tensor] = []  # the DINO head's last layer, or SwAV's prototypes
        self.weight_decay: list[list[float]] = []

    @hookimpl
    def on_step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        frozen = (run.projector.last_layer.weight_v if isinstance(run.projector, DINOHead)
                  else run.objective.prototypes.weight)
        self.frozen.append(frozen.detach().clone())
        self.weight_decay.append([group["weight_decay"] for group in run.optimizer.param_groups])


@pytest.fixture
def recorder(plugins):
    recorder = Recorder()
    plugins.manager.register(recorder, name="dino-swav-recorder")
    yield recorder
    plugins.manager.unregister(name="dino-swav-recorder")


def tiny_trainer(name: str, plugins, run_dir: Path, steps: int, *overrides: str) -> Trainer:
    recipe = load_and_resolve(RECIPES / "tiny" / f"{name}.yaml", ["eval.evaluators=[]", "trainer.log_every=100",
                                                                  f"schedule.max_steps={steps}", *overrides], plugins)
    return Trainer.from_recipe(recipe, plugins, run_dir, log=QUIET)


def image_batch(n: int = 4) -> Batch:
    """Two global 16x16 views and two local 8x8 crops of ``n`` items."""
    generator = torch.Generator().manual_seed(0)
    views = [torch.rand(n, 3, size, size, generator=generator) for size in (16, 16, 8, 8)]
    return Batch(views=views, index=torch.arange(n))


def vector_batch(n: int = 8) -> Batch:
    """Four views of ``n`` vectors ``(n, 8)``: two global, two local."""
    generator = torch.Generator().manual_seed(0)
    return Batch(views=[torch.randn(n, 8, generator=generator) for _ in range(4)], index=torch.arange(n))


def logits(views: int, n: int = 3, k: int = 5, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, k, generator=generator, dtype=torch.float64) for _ in range(views)]


def test_dino_loss_matches_a_naive_loop():
    student, teacher = logits(4), logits(2, seed=1)
    center = torch.randn(1, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pairs = []
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            items = []
            for n in range(t.shape[0]):
                p = [math.exp((t[n, k] - center[0, k]) / 0.04) for k in range(5)]
                log_z = math.log(sum(math.exp(s[n, k] / 0.1) for k in range(5)))
                items.append(-sum(p[k] / sum(p) * (s[n, k] / 0.1 - log_z) for k in range(5)))
            pairs.append(sum(items) / len(items))
    assert dino_loss(student, teacher, center, 0.04, 0.1).item() == pytest.approx(sum(pairs) / len(pairs))


def test_dino_centre_is_an_ema_of_the_teachers_mean_output():
    torch.manual_seed(0)
    encoder = TinyLinearEncoder()
    projector = DINOHead(encoder.output_dim, hidden_dim=8, bottleneck_dim=4, output_dim=10)
    objective = DINO(encoder, projector, center_momentum=0.9)
    batch = vector_batch()
    teacher_mean = torch.cat([objective.teacher(view) for view in batch.views[:2]]).mean(dim=0, keepdim=True)

    objective(batch, encoder, projector)
    assert torch.allclose(objective.center, 0.1 * teacher_mean, atol=1e-7)
    objective(batch, encoder, projector)
    assert torch.allclose(objective.center, 0.9 * 0.1 * teacher_mean + 0.1 * teacher_mean, atol=1e-7)


def test_teacher_temperature_warms_up_linearly_then_stays():
    values = [teacher_temperature(step, 0.04, 0.07, warmup_steps=3) for step in range(6)]
    assert values == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert teacher_temperature(0, 0.04, 0.07, warmup_steps=0) == 0.07


def test_dino_uses_the_scheduled_temperature_of_its_step_count():
    encoder, projector = TinyLinearEncoder(), MLPProjector(6, hidden_dim=8, output_dim=4, batch_norm=False)
    objective = DINO(encoder, projector, warmup_teacher_temp=0.04, teacher_temp=0.08, warmup_teacher_temp_steps=4)
    objective.after_step(2, 10, encoder, projector)
    assert objective(vector_batch(), encoder, projector).metrics["teacher_temp"] == pytest.approx(0.06)


def test_dino_tiny_recipe_trains_with_the_last_layer_frozen_and_weight_decay_on_a_cosine(plugins, recorder,
                                                                                          tmp_path):
    trainer = tiny_trainer("dino", plugins, tmp_path / "run", steps=4)  # freeze_last_layer: 2
    initial = trainer.model.projector.last_layer.weight_v.detach().clone()
    trainer.fit()

    frozen = recorder.frozen
    assert torch.equal(frozen[0], initial) and torch.equal(frozen[1], initial)
    assert not torch.equal(frozen[2], initial) and not torch.equal(frozen[3], frozen[2])
    cosine = [0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * (step - 1) / 4)) / 2 for step in range(1, 5)]
    assert [decay for decay, _ in recorder.weight_decay] == pytest.approx(cosine)
    assert [no_decay for _, no_decay in recorder.weight_decay] == [0.0] * 4  # biases and norms keep none
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in records)
    assert [r["teacher_temp"] for r in records] == pytest.approx([0.04, 0.0475, 0.055, 0.0625])


def test_the_weight_decay_schedule_continues_from_a_restored_optimizer():
    encoder, projector = TinyLinearEncoder(), MLPProjector(6, hidden_dim=8, output_dim=4, batch_norm=False)
    objective = DINO(encoder, projector, weight_decay_end=0.4)

    def run_with_new_optimizer() -> RunContext:
        optimizer = torch.optim.SGD(parameter_groups([encoder, projector]), lr=0.1, weight_decay=0.04)
        return RunContext({}, Path("."), torch.device("cpu"), encoder, projector, objective, optimizer, 10)

    first = run_with_new_optimizer()
    for step in (1, 2):
        dino_before_optimizer_step(first, step)
    resumed = run_with_new_optimizer()
    resumed.optimizer.load_state_dict(first.optimizer.state_dict())
    dino_before_optimizer_step(resumed, 3)
    assert resumed.optimizer.param_groups[0]["weight_decay"] == pytest.approx(cosine_weight_decay(3, 10, 0.04, 0.4))


def test_the_hooks_leave_other_runs_alone():
    encoder, projector = TinyLinearEncoder(), MLPProjector(6, hidden_dim=8, output_dim=4, batch_norm=False)
    optimizer = torch.optim.SGD(parameter_groups([encoder, projector]), lr=0.1, weight_decay=0.04)
    run = RunContext({}, Path("."), torch.device("cpu"), encoder, projector, NTXent(), optimizer, 10)
    for parameter in projector.parameters():
        parameter.grad = torch.ones_like(parameter)
    image_plugin.on_before_optimizer_step(run=run, step=1)
    assert optimizer.param_groups[0]["weight_decay"] == 0.04
    assert all(parameter.grad is not None for parameter in projector.parameters())


def test_sinkhorn_codes_have_the_transport_marginals():
    embeddings, prototypes = (nn.functional.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(n)),
                                                      dim=1) for n in (64, 8))
    scores = embeddings @ prototypes.t()  # (B, K) = (64, 8), cosine similarities as in SwAV
    unbalanced = torch.softmax(scores.flatten() / 0.05, dim=0).view(64, 8)
    plan = sinkhorn_knopp(scores, epsilon=0.05, iterations=3) / 64  # the transport plan Q^T: (B, K)
    assert plan.sum().item() == pytest.approx(1.0)
    assert torch.allclose(plan.sum(dim=1), torch.full((64,), 1 / 64))  # each embedding: 1/B, exactly
    before, after = ((p.sum(dim=0) - 1 / 8).abs().max().item() for p in (unbalanced, plan))
    assert before > 0.2 and after < 0.05 and after < before / 5  # each prototype: about 1/K after 3 iterations
    converged = sinkhorn_knopp(scores, epsilon=0.05, iterations=200) / 64
    assert torch.allclose(converged.sum(dim=0), torch.full((8,), 1 / 8), atol=1e-6)


def test_swav_loss_matches_a_naive_loop():
    scores, codes = logits(4), [torch.softmax(q, dim=1) for q in logits(2, seed=1)]
    per_code = []
    for i, q in enumerate(codes):
        per_view = []
        for v, s in enumerate(scores):
            if v == i:
                continue
            items = []
            for n in range(s.shape[0]):
                log_z = math.log(sum(math.exp(s[n, k] / 0.1) for k in range(5)))
                items.append(-sum(q[n, k] * (s[n, k] / 0.1 - log_z) for k in range(5)))
            per_view.append(sum(items) / len(items))
        per_code.append(sum(per_view) / len(per_view))
    assert swapped_prediction_loss(scores, codes, 0.1).item() == pytest.approx(sum(per_code) / len(per_code))


def test_dino_head_conforms():
    check_projector(DINOHead, {"hidden_dim": 8, "bottleneck_dim": 4, "output_dim": 10}, input_dim=6)


def test_dino_conforms():
    encoder = ResNet18(stem="cifar", width=4)
    projector = DINOHead(encoder.output_dim, hidden_dim=16, bottleneck_dim=8, output_dim=20)
    check_objective(DINO, {"warmup_teacher_temp_steps": 5, "teacher_temp": 0.07}, image_batch(), encoder, projector)


def test_swav_conforms():
    encoder = ResNet18(stem="cifar", width=4)
    projector = MLPProjector(encoder.output_dim, hidden_dim=16, output_dim=8)
    check_objective(SwAV, {"num_prototypes": 10, "queue_length": 4, "freeze_prototypes_steps": 0}, image_batch(),
                    encoder, projector)


def test_dino_trains_on_two_processes_like_on_one():
    torch.manual_seed(0)
    encoder = TinyLinearEncoder()
    projector = DINOHead(encoder.output_dim, hidden_dim=8, bottleneck_dim=4, output_dim=10)
    check_objective_distributed(DINOTwice, {"teacher_temp": 0.07}, vector_batch(), encoder, projector)


def test_swav_trains_on_two_processes_like_on_one():
    torch.manual_seed(0)
    encoder = TinyLinearEncoder()
    projector = MLPProjector(encoder.output_dim, hidden_dim=8, output_dim=4, batch_norm=False)
    _, gradients = check_objective_distributed(SwAVTwice, {"num_prototypes": 5, "queue_length": 8}, vector_batch(),
                                               encoder, projector)
    assert gradients["objective.prototypes.weight"].abs().sum() > 0


def test_swav_tiny_recipe_trains_with_frozen_prototypes_and_its_queue(plugins, recorder, tmp_path):
    trainer = tiny_trainer("swav", plugins, tmp_path / "run", steps=5)  # frozen 2 steps, queue of 64 from step 2
    initial = trainer.model.objective.prototypes.weight.detach().clone()
    trainer.fit()

    frozen = recorder.frozen
    assert torch.allclose(frozen[0], initial, atol=1e-6) and torch.allclose(frozen[1], initial, atol=1e-6)
    assert not torch.allclose(frozen[2], initial, atol=1e-6)
    assert all(torch.allclose(weights.norm(dim=1), torch.ones(32)) for weights in frozen)  # rows stay unit vectors
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["queue_in_use"] for r in records] == [0, 0, 0, 1, 1]
    assert all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize("name", ["dino", "swav"])
def test_tiny_recipe_resumes_exactly_after_a_kill(name, plugins, tmp_path):
    """Killed after step 3, resumed from the checkpoint of step 2: the centre, teacher, queues, step
    counts and the weight-decay schedule continue as in a run that was never stopped."""
    straight = tiny_trainer(name, plugins, tmp_path / "straight", 5, "trainer.checkpoint_every=2")
    straight.fit()
    kill_at(3, tiny_trainer(name, plugins, tmp_path / "killed", 5, "trainer.checkpoint_every=2"), plugins)
    resumed = Trainer.resume(tmp_path / "killed", plugins, log=QUIET)
    assert resumed.step == 2
    resumed.fit()
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert ([group["weight_decay"] for group in resumed.optimizer.param_groups]
            == [group["weight_decay"] for group in straight.optimizer.param_groups])
