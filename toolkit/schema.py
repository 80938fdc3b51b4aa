"""A factory's signature is its schema.

Recipe blocks are checked against the typed keyword parameters of the factory they name (or of
a config dataclass) before anything heavy runs: unknown keys get close matches, wrong types get
the expected type, missing required keys are named. Supported annotations: ``bool``, ``int``,
``float``, ``str``, ``pathlib.Path``, ``None``, ``Any``, ``Literal[...]``, unions,
``list[T]``, ``tuple[T, ...]``/``tuple[T1, T2]`` and ``dict[str, T]``.

Ranges are part of the signature: ``Annotated[int, Ge(1)]``, ``Annotated[float, Interval(ge=0,
le=1)]``, ``Annotated[tuple[float, float], ASCENDING]`` with the constraints of the
``annotated-types`` package (``Gt``, ``Ge``, ``Lt``, ``Le``, ``Interval``, ``MinLen``, ``MaxLen``,
``Predicate``), so ``selfsup recipe validate`` rejects ``batch_size: 0`` with the recipe key
before anything runs::

    def __init__(self, temperature: Annotated[float, Gt(0)] = 0.1, k: Annotated[int, Ge(1)] = 200): ...
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import operator
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import annotated_types
import torch

from toolkit.errors import RecipeError

EMPTY = inspect.Parameter.empty


class SchemaError(RecipeError):
    """A value does not fit its parameter; ``key`` is the offending key, relative to the block."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    annotation: Any
    default: Any  # EMPTY when required

    @property
    def required(self) -> bool:
        return self.default is EMPTY


def fields_of(factory: Callable[..., Any], injected: frozenset[str] = frozenset()) -> dict[str, Field]:
    """The recipe-settable parameters of ``factory`` (minus those the engine injects)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    if target in _PARAMETERLESS:  # a class that inherits nn.Module's or object's constructor
        return {}
    signature = inspect.signature(target)
    hints = typing.get_type_hints(target, include_extras=True)
    result: dict[str, Field] = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or name in injected:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"{_qualname(factory)} takes *{name}: a component factory must list its parameters "
                f"explicitly so that recipes can be validated"
            )
        default = parameter.default
        if dataclasses.is_dataclass(factory) and name in {f.name for f in dataclasses.fields(factory)}:
            dc_field = next(f for f in dataclasses.fields(factory) if f.name == name)
            if dc_field.default_factory is not dataclasses.MISSING:
                default = dc_field.default_factory()
        result[name] = Field(name, hints.get(name, Any), default)
    return result


def validate(block: dict[str, Any], fields: dict[str, Field]) -> dict[str, Any]:
    """Check ``block`` against ``fields``; return it with defaults filled and values coerced."""
    for key in block:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise SchemaError(key, f"unknown key{hint or '.'} Valid keys: {', '.join(fields) or 'none'}")
    resolved: dict[str, Any] = {}
    for name, field in fields.items():
        if name in block:
            resolved[name] = coerce(block[name], field.annotation, name)
        elif field.required:
            raise SchemaError(name, f"missing required key (expected {describe(field.annotation)})")
        else:
            resolved[name] = field.default
    return resolved


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` as ``annotation`` (int -> float, str -> Path, list -> tuple) or raise."""
    try:
        result = _coerce(value, annotation)
    except _OutOfRange as error:
        raise SchemaError(key, f"{error} (got {value!r})") from None
    if result is _MISMATCH:
        raise SchemaError(key, f"expected {describe(annotation)}, got {type(value).__name__} {value!r}")
    return result


def describe(annotation: Any) -> str:
    """A human name for an annotation: ``int``, ``one of 'sgd', 'lars'``, ``list of float``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "any value"
    if origin is Annotated:
        limits = [_describe_constraint(c) for c in annotation.__metadata__]
        return " ".join([describe(args[0]), *(f"({limit})" for limit in limits if limit)])
    if annotation is type(None) or annotation is None:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        inner = args[0] if args else Any
        return f"list of {describe(inner)}" if origin is list or (len(args) == 2 and args[1] is Ellipsis) else (
            "list of " + ", ".join(describe(a) for a in args)
        )
    if origin is dict:
        return "mapping"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def is_path(annotation: Any) -> bool:
    """Whether ``annotation`` is ``Path`` or an optional/union containing it."""
    if annotation is Path:
        return True
    return typing.get_origin(annotation) in (Union, types.UnionType) and Path in typing.get_args(annotation)


def _ascending(values: Any) -> bool:
    return all(a <= b for a, b in zip(values, values[1:]))


ASCENDING = annotated_types.Predicate(_ascending)
"""A constraint for ranges written as ``[low, high]``: ``Annotated[tuple[float, float], ASCENDING]``."""

_MISMATCH = object()
_PARAMETERLESS = (object.__init__, torch.nn.Module.__init__)


class _OutOfRange(ValueError):
    """A value of the right type breaks a constraint of its ``Annotated`` annotation."""


_BOUNDS = (("gt", ">", operator.gt), ("ge", ">=", operator.ge), ("lt", "<", operator.lt), ("le", "<=", operator.le))
"""The bound attributes of ``Gt``/``Ge``/``Lt``/``Le``/``Interval``: name, symbol, test."""


def _describe_constraint(constraint: Any) -> str:
    if isinstance(constraint, annotated_types.Predicate):
        return constraint.func.__name__.strip("_").replace("_", " ")
    if isinstance(constraint, annotated_types.MinLen):
        return f"at least {constraint.min_length} items"
    if isinstance(constraint, annotated_types.MaxLen):
        return f"at most {constraint.max_length} items"
    return " and ".join(f"{symbol} {getattr(constraint, name)}" for name, symbol, _ in _BOUNDS
                        if getattr(constraint, name, None) is not None)


def _satisfies(value: Any, constraint: Any) -> bool:
    if isinstance(constraint, annotated_types.Predicate):
        return bool(constraint.func(value))
    if isinstance(constraint, annotated_types.MinLen):
        return len(value) >= constraint.min_length
    if isinstance(constraint, annotated_types.MaxLen):
        return len(value) <= constraint.max_length
    return all(test(value, getattr(constraint, name)) for name, _, test in _BOUNDS
               if getattr(constraint, name, None) is not None)


def _check_constraints(value: Any, constraints: tuple[Any, ...]) -> None:
    for constraint in constraints:
        if not _satisfies(value, constraint):
            raise _OutOfRange(f"must be {_describe_constraint(constraint)}")


def _coerce(value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if origin is Annotated:
        result = _coerce(value, args[0])
        if result is not _MISMATCH and result is not None:
            _check_constraints(result, annotation.__metadata__)
        return result
    if annotation is type(None) or annotation is None:
        return None if value is None else _MISMATCH
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in args) else _MISMATCH
    if origin in (Union, types.UnionType):
        ordered = sorted(args, key=lambda a: a is float)  # try exact types before int -> float
        for option in ordered:
            result = _coerce(value, option)
            if result is not _MISMATCH:
                return result
        return _MISMATCH
    if annotation is bool:
        return value if isinstance(value, bool) else _MISMATCH
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISMATCH
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _MISMATCH
    if annotation is str:
        return value if isinstance(value, str) else _MISMATCH
    if annotation is Path:
        return Path(value) if isinstance(value, (str, Path)) else _MISMATCH
    if origin is list or annotation is list:
        if not isinstance(value, (list, tuple)):
            return _MISMATCH
        items = [_coerce(v, args[0] if args else Any) for v in value]
        return _MISMATCH if _MISMATCH in items else items
    if origin is tuple or annotation is tuple:
        if not isinstance(value, (list, tuple)):
            return _MISMATCH
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0]) for v in value]
        elif args:
            if len(value) != len(args):
                return _MISMATCH
            items = [_coerce(v, a) for v, a in zip(value, args)]
        else:
            items = list(value)
        return _MISMATCH if _MISMATCH in items else tuple(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict) or (args and args[0] is str and not all(isinstance(k, str) for k in value)):
            return _MISMATCH
        inner = args[1] if len(args) == 2 else Any
        items = {k: _coerce(v, inner) for k, v in value.items()}
        return _MISMATCH if _MISMATCH in items.values() else items
    return value if isinstance(value, annotation) else _MISMATCH


def _qualname(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"
