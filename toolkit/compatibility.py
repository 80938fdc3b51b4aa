"""Whether a recipe's components can work together, checked when a recipe is resolved (so by
``selfsup recipe validate`` and before training builds anything).

A component factory declares what it consumes and produces with :func:`declare`::

    @declare(Contract(consumes={"image"}, produces={"tensor"}))
    class ResNet18(Encoder): ...

    @declare(lambda p: Contract(consumes={"sequence"}, produces={"sequence"}, views=p.get("n_views", 1)))
    class CPCAudioAugmentation(Augmentation): ...

A contract is fixed or a function of the component's resolved recipe parameters. Along the
data path ``data -> augmentation -> encoder -> objective`` each link must share a tag (what a
data source ``produces`` must be one that the augmentation ``consumes``, and so on), and the
augmentation's ``views`` per item must lie within the objective's ``min_views..max_views``.
Components that declare nothing are not checked. Tags in use (plugins may add their own):
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar, Union

from toolkit.errors import RecipeError

if TYPE_CHECKING:
    from toolkit.plugins import Plugins

TAGS: dict[str, str] = {
    "image": "images (C, H, W)",
    "clip": "video clips (C, T, H, W)",
    "video": "whole videos",
    "text": "strings",
    "sequence": "sequences (C, L) (audio, time series)",
    "tensor": "tensor batches",
    "tokens": "token dicts (tokenized text)",
    "cpc": "a CPC encoder (encode, context and valid_frames)",
    "ts2vec": "a per-time-step encoder (encode(x, mask) -> (N, L, D)), such as ts2vec",
    "pairs": "paired items of two modalities (image-text)",
    "patches": "a patch-token encoder (a Vision Transformer: patch_tokens and encode_tokens)",
}
__doc__ += "".join(f"\n- ``{tag}``: {meaning}" for tag, meaning in TAGS.items())

LINKS = (("data", "augmentation"), ("augmentation", "encoder"), ("encoder", "objective"))


@dataclass(frozen=True)
class Contract:
    """What one component takes and gives. Empty ``consumes`` accepts anything; empty
    ``produces`` is not checked against the next component."""

    consumes: frozenset[str] = field(default_factory=frozenset)
    produces: frozenset[str] = field(default_factory=frozenset)
    views: int | None = None
    """Augmentations: views made of each item."""
    min_views: int = 1
    """Objectives: the fewest views per item they work with."""
    max_views: int | None = None
    """Objectives: the most views per item they use (``None``: any number)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumes", frozenset(self.consumes))
        object.__setattr__(self, "produces", frozenset(self.produces))


Declared = Union[Contract, Callable[[dict[str, Any]], Contract]]
F = TypeVar("F", bound=Callable[..., Any])


class IncompatibleComponents(RecipeError):
    """Two components of a recipe cannot work together; the message names both and a fix."""


def declare(contract: Declared) -> Callable[[F], F]:
    """Attach ``contract`` (or a function of the recipe parameters giving one) to a factory."""

    def mark(factory: F) -> F:
        factory.selfsup_contract = contract  # type: ignore[attr-defined]
        return factory

    return mark


def contract_of(factory: Callable[..., Any], params: dict[str, Any]) -> Contract | None:
    """The factory's contract for these resolved parameters, or ``None`` if it declares none."""
    declared = getattr(factory, "selfsup_contract", None)
    if declared is None or isinstance(declared, Contract):
        return declared
    return declared(params)


def check(recipe: dict[str, Any], plugins: Plugins, where: str) -> None:
    """Raise :class:`IncompatibleComponents` for the first mismatch between the resolved
    ``recipe``'s data, augmentation, encoder and objective; ``where`` (the recipe file) starts
    the message."""
    kinds = {"data": "datasource", "augmentation": "augmentation", "encoder": "encoder", "objective": "objective"}
    contracts = {section: contract_of(plugins.get(kind, recipe[section]["name"]).factory, recipe[section])
                 for section, kind in kinds.items()}
    name = {section: f"{section} {recipe[section]['name']}" for section in kinds}
    for giver, taker in LINKS:
        given, taken = contracts[giver], contracts[taker]
        if given is None or taken is None or not given.produces or not taken.consumes:
            continue
        if not given.produces & taken.consumes:
            fits = _accepting(plugins, kinds[taker], given.produces)
            fix = (f"with {name[giver]} use {taker} {' or '.join(fits)}" if fits
                   else f"no installed {taker} takes {_describe(given.produces)}")
            raise IncompatibleComponents(
                f"{where}: {name[taker]} takes {_describe(taken.consumes)}, but {name[giver]} gives "
                f"{_describe(given.produces)}; {fix}")
    augmentation, objective = contracts["augmentation"], contracts["objective"]
    if augmentation is None or objective is None or augmentation.views is None:
        return
    views, low, high = augmentation.views, objective.min_views, objective.max_views
    if views < low or (high is not None and views > high):
        wanted = str(low) if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
        settable = "n_views" in _parameters(plugins.get("augmentation", recipe["augmentation"]["name"]).factory)
        fix = (f"set augmentation.n_views: {low}" if settable
               else f"use an augmentation that makes {wanted} views")
        raise IncompatibleComponents(f"{where}: {name['objective']} needs {wanted} view{'s' * (wanted != '1')} per "
                                     f"item, but {name['augmentation']} makes {views}; {fix}")


def _accepting(plugins: Plugins, kind: str, tags: frozenset[str]) -> list[str]:
    """Names of the registered components of ``kind`` whose default contract takes one of ``tags``."""
    names = []
    for component in plugins.components(kind):
        try:
            contract = contract_of(component.factory, {})
        except Exception:  # a contract function that needs parameters the defaults do not give
            continue
        if contract is not None and contract.consumes & tags:
            names.append(component.name)
    return names


def _parameters(factory: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(factory).parameters)


def _describe(tags: frozenset[str]) -> str:
    return " or ".join(TAGS.get(tag, tag) for tag in sorted(tags))
