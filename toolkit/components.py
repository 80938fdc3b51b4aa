"""Component kinds and the one way a component is built.

:data:`KINDS` is the table every other module reads: for each kind, the hook that registers its
factories, the interface an instance must implement and the parameters the engine supplies by
name instead of the recipe. A factory asks for an injected value by naming it in its signature
(``def __init__(self, temperature: float = 0.1, encoder: Encoder = None)``); it receives only
those it names.

A parameter annotated with an interface (``frames: Encoder``) is a *nested component*: its
recipe value is a block of that kind (``frames: {name: resnet18, stem: cifar}``, or just the name,
``frames: resnet18``), validated like a top-level one, and the factory receives the built
instance. A video encoder built on any image encoder, or CLIP's two towers, are nested blocks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from toolkit import schema
from toolkit.errors import RecipeError, SelfsupError
from toolkit.interfaces import Augmentation, DataSource, Encoder, Evaluator, Objective, Projector


@dataclass(frozen=True)
class Kind:
    """What a kind of component is: registered by ``hook``, an instance of ``interface``."""

    hook: str
    interface: type
    injected: frozenset[str] = frozenset()
    """Factory parameters the engine supplies (by name) rather than the recipe."""


KINDS: dict[str, Kind] = {
    "augmentation": Kind("register_augmentations", Augmentation),
    "encoder": Kind("register_encoders", Encoder),
    "projector": Kind("register_projectors", Projector, frozenset({"input_dim"})),
    "objective": Kind("register_objectives", Objective,
                      frozenset({"encoder", "projector", "dataset_size", "num_classes", "total_steps"})),
    "datasource": Kind("register_datasources", DataSource, frozenset({"input_spec", "holdout_fraction", "device"})),
    "evaluator": Kind("register_evaluators", Evaluator),
    "optimizer": Kind("register_optimizers", torch.optim.Optimizer, frozenset({"params", "model"})),
}


@dataclass(frozen=True)
class Component:
    """One registered factory: ``kind`` ``name`` from plugin ``plugin``."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str


@dataclass(frozen=True)
class Resolved:
    """A validated block: the component it names and its keyword arguments, coerced to their
    annotations, defaults filled in, nested components :class:`Resolved` in turn."""

    component: Component
    params: dict[str, Any]

    def plugins(self) -> set[str]:
        """The plugins whose components this block uses, nested blocks included."""
        nested = [value.plugins() for value in self.params.values() if isinstance(value, Resolved)]
        return {self.component.plugin}.union(*nested)

    def build(self, **available: Any) -> Any:
        """The instance; ``available`` are the injected values, of which the factory gets those it names."""
        params = {k: v.build() if isinstance(v, Resolved) else v for k, v in self.params.items()}
        component = self.component
        try:
            return instantiate(component.kind, component.factory, params, available)
        except SelfsupError:
            raise
        except (ValueError, OSError) as error:  # the factory's own words about its input or its files
            raise ComponentError(str(error)) from error
        except Exception as error:  # a bug: its traceback shows, with which component it was
            if hasattr(error, "add_note"):
                error.add_note(f"while building {component.kind} {component.name!r} of plugin {component.plugin!r}")
            raise


class ComponentError(RecipeError):
    """A component's factory refused its parameters or could not read its files."""


def instantiate(kind: str, factory: Callable[..., Any], params: Mapping[str, Any], available: Mapping[str, Any]) -> Any:
    """``factory(**params, **injected)`` checked against the interface of ``kind``; ``params``
    must be validated already, and ``injected`` is the part of ``available`` the factory names."""
    wanted = set(inspect.signature(factory).parameters) & KINDS[kind].injected
    instance = factory(**params, **{k: v for k, v in available.items() if k in wanted})
    interface = KINDS[kind].interface
    if not isinstance(instance, interface):
        raise TypeError(f"{getattr(factory, '__qualname__', factory)} is registered as a {kind} but returned "
                        f"{type(instance).__name__}, not a {interface.__module__}.{interface.__qualname__}")
    return instance


def fields_of(kind: str, factory: Callable[..., Any]) -> dict[str, schema.Field]:
    """The recipe-settable parameters of a factory of ``kind``."""
    return schema.fields_of(factory, KINDS[kind].injected)


def nested_kind(annotation: Any) -> str | None:
    """The kind of a nested component parameter (annotated with an interface), else ``None``."""
    for kind, spec in KINDS.items():
        if inspect.isclass(annotation) and issubclass(annotation, spec.interface):
            return kind
    return None
