"""Every hook a selfsup plugin can implement.

A plugin is a module with functions decorated by :data:`hookimpl`, declared as an entry point in
the ``selfsup`` group of its package metadata::

    [project.entry-points.selfsup]
    myplugin = "selfsup_myplugin.plugin"

Registration hooks receive a ``register`` callback rather than returning values, so one plugin
can register many components and the core can validate each one as it arrives (and name the
plugin when something is wrong). A component is registered as a *factory*: a class or function
whose typed keyword parameters are the component's recipe schema.

Lifecycle hooks (``on_*``) receive a :class:`~toolkit.interfaces.RunContext`, ``run``: the run's
components, optimizer, step and directory. Except ``on_before_optimizer_step``, they run on the
main process only, so that a logger writes once. (Their ``trainer`` argument, the whole Trainer,
is deprecated: an implementation that asks for it still gets it, with a ``DeprecationWarning``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from toolkit.interfaces import DataSource, RunContext

PROJECT = "selfsup"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Callable[..., Any]], None]

_TRAINER_ARGUMENT = {"trainer": DeprecationWarning(
    "the `trainer` argument of selfsup's lifecycle hooks is deprecated and will be removed: take `run` (a "
    "toolkit.interfaces.RunContext, with the run's components, optimizer, step and directory) instead")}
"""Lifecycle hooks took the whole Trainer before 0.2; implementations that still ask for it get it, with a warning."""


@hookspec
def register_augmentations(register: Register) -> None:
    """Register augmentation factories: ``register("simclr", SimCLRAugmentation)``.

    The factory returns an :class:`toolkit.interfaces.Augmentation` (item -> views).
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder factories: ``register("resnet18", resnet18)``.

    The factory returns an :class:`toolkit.interfaces.Encoder` (x -> h).
    """


@hookspec
def register_projectors(register: Register) -> None:
    """Register projector factories: ``register("mlp", MLPProjector)``.

    The factory receives ``input_dim`` (the encoder's ``output_dim``) and returns an
    :class:`toolkit.interfaces.Projector` (h -> z).
    """


@hookspec
def register_objectives(register: Register) -> None:
    """Register objective factories: ``register("nt-xent", NTXent)``.

    The factory may ask, by parameter name, for ``encoder``, ``projector``, ``dataset_size``,
    ``num_classes`` and ``total_steps``; it returns an :class:`toolkit.interfaces.Objective`.
    """


@hookspec
def register_datasources(register: Register) -> None:
    """Register data source factories: ``register("image-npz", ImageNpz)``.

    The factory returns a :class:`toolkit.interfaces.DataSource`; it must accept ``split``.
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluator factories: ``register("knn", KNNEvaluator)``.

    The factory returns a :class:`toolkit.interfaces.Evaluator`.
    """


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimizer factories: ``register("lars", lars)``.

    The factory receives ``params`` (the trainable parameters in two groups: weights, and biases
    and normalisation parameters without weight decay, flagged ``lars_exclude``) and may ask for
    ``model`` (the :class:`torch.nn.Module` holding encoder, projector and objective) to make
    groups of its own; it returns a :class:`torch.optim.Optimizer`. The learning-rate schedule
    scales every group's ``lr``.
    """


@hookspec
def register_recipes(register: Callable[[str], None]) -> None:
    """Register recipe files this plugin ships: ``register(str(path_to_yaml))``.

    ``selfsup recipes`` lists them by plugin.
    """


@hookspec(firstresult=True)
def render_items(source: DataSource, indices: list[int]) -> list[str] | None:
    """Show items of ``source`` in a run report (``selfsup report``: the nearest-neighbour examples).

    Return one self-contained HTML fragment per index, in order (an image as
    ``toolkit.reporting.image_html(tensor)``, a sentence as escaped text, a waveform as inline
    SVG; files are embedded as data URIs, so the report is one page), or ``None`` for a source
    this plugin does not know (the first answer wins; the core plugin answers last, for items
    that are uint8 images ``(C, H, W)`` or strings). The report adds each item's id and label.
    """


@hookspec(warn_on_impl_args=_TRAINER_ARGUMENT)
def on_train_start(run: RunContext, trainer: Any) -> None:
    """Called once before the first training step (also after a resume, with ``run.step`` restored)."""


@hookspec
def on_before_optimizer_step(run: RunContext, step: int) -> None:
    """Called on every process after the gradients of step ``step`` (1-based) are complete and
    clipped, before the optimizer applies them: the place to change gradients (DINO's frozen last
    layer), or a parameter group's ``lr`` or ``weight_decay`` (a weight-decay schedule, SimSiam's
    fixed predictor learning rate) in ``run.optimizer.param_groups``. Every process must make the
    same change. A hook sees every run: act only on the components it knows
    (``isinstance(run.objective, MyObjective)``)."""


@hookspec(warn_on_impl_args=_TRAINER_ARGUMENT)
def on_step_end(run: RunContext, step: int, metrics: dict[str, float], trainer: Any) -> None:
    """Called after every optimizer step with the step number (1-based) and its metrics."""


@hookspec(warn_on_impl_args=_TRAINER_ARGUMENT)
def on_eval_end(run: RunContext, step: int, metrics: dict[str, float], trainer: Any) -> None:
    """Called after each evaluation with the step it ran at and the metrics it produced."""


@hookspec(warn_on_impl_args=_TRAINER_ARGUMENT)
def on_train_end(run: RunContext, metrics: dict[str, float], trainer: Any) -> None:
    """Called once after the last training step with the final evaluation metrics."""


@hookspec
def on_train_exception(run: RunContext, exception: BaseException) -> None:
    """Called once when training ends without finishing, instead of ``on_train_end``, with what
    ``fit`` is about to raise: a stop (``toolkit.TrainingInterrupted``, after SIGTERM or
    Ctrl-C: a checkpoint was written and ``selfsup train --resume`` continues), a divergence,
    a data error, a ``KeyboardInterrupt`` or any other failure. The place for a tracker to close
    its run as failed or killed. The exception is raised whatever the hook does; a hook that fails
    itself is reported in one line and does not hide it. (A killed process runs no hook.)"""
