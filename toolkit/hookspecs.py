"""Every hook a selfsup plugin can implement.

A plugin is a module with functions decorated by :data:`hookimpl`, declared as an entry point in
the ``selfsup`` group of its package metadata::

    [project.entry-points.selfsup]
    myplugin = "selfsup_myplugin.plugin"

Registration hooks receive a ``register`` callback rather than returning values, so one plugin
can register many components and the core can validate each one as it arrives (and name the
plugin when something is wrong). A component is registered as a *factory*: a class or function
whose typed keyword parameters are the component's recipe schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from toolkit.engine import Trainer

PROJECT = "selfsup"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Callable[..., Any]], None]


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
def register_recipes(register: Callable[[str], None]) -> None:
    """Register recipe files this plugin ships: ``register(str(path_to_yaml))``.

    ``selfsup recipes`` lists them by plugin.
    """


@hookspec
def on_train_start(trainer: Trainer) -> None:
    """Called once before the first training step (also after a resume)."""


@hookspec
def on_step_end(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimizer step with the step number (1-based) and its metrics."""


@hookspec
def on_eval_end(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
    """Called after each evaluation with the step it ran at and the metrics it produced."""


@hookspec
def on_train_end(trainer: Trainer, metrics: dict[str, float]) -> None:
    """Called once after the last training step with the final evaluation metrics."""
