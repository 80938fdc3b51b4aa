"""Specification of ``toolkit.schema``: a factory's typed signature is its recipe schema."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from toolkit.schema import EMPTY, Field, SchemaError, coerce, describe, fields_of, is_path, validate


def _rejects(value: Any, annotation: Any) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        coerce(value, annotation, "key")
    return caught.value


# --- coerce: scalars ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_bool_accepts_true_and_false(value):
    assert coerce(value, bool, "flag") is value


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_bool_rejects_ints_strings_and_null(value):
    _rejects(value, bool)


def test_int_accepts_an_int():
    assert coerce(7, int, "n") == 7


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_int(value):
    _rejects(value, int)


@pytest.mark.parametrize("value", [1.5, 2.0, "3", None])
def test_int_rejects_floats_strings_and_null(value):
    _rejects(value, int)


def test_float_accepts_an_int_and_returns_a_float():
    result = coerce(3, float, "lr")
    assert result == 3.0 and type(result) is float


def test_float_keeps_a_float():
    assert coerce(0.25, float, "lr") == 0.25


@pytest.mark.parametrize("value", [True, "0.1", "1e-3", None])
def test_float_rejects_bools_strings_and_null(value):
    _rejects(value, float)


def test_str_accepts_a_string():
    assert coerce("auto", str, "device") == "auto"


@pytest.mark.parametrize("value", [5, 1.0, True, None, ["a"]])
def test_str_rejects_non_strings(value):
    _rejects(value, str)


def test_path_accepts_a_string_and_returns_a_path():
    assert coerce("data/x.npz", Path, "path") == Path("data/x.npz")


@pytest.mark.parametrize("value", [3, None, ["a"]])
def test_path_rejects_non_strings(value):
    _rejects(value, Path)


def test_literal_accepts_a_listed_value():
    assert coerce("cifar", Literal["imagenet", "cifar"], "stem") == "cifar"


def test_literal_rejects_an_unlisted_value_and_lists_the_choices():
    error = _rejects("Cifar", Literal["imagenet", "cifar"])
    assert "one of 'imagenet', 'cifar'" in error.message


def test_literal_of_ints_rejects_a_bool():
    _rejects(True, Literal[1, 2])


def test_any_accepts_anything():
    value = {"nested": [1, "x"]}
    assert coerce(value, Any, "k") is value


# --- coerce: optional and unions ----------------------------------------------------------------


def test_optional_accepts_null():
    assert coerce(None, Optional[int], "max_steps") is None


def test_optional_accepts_its_inner_type():
    assert coerce(5, int | None, "max_steps") == 5


def test_optional_rejects_other_types():
    error = _rejects("5", int | None)
    assert "expected int or null" in error.message


def test_non_optional_rejects_null():
    _rejects(None, int)


def test_union_prefers_an_exact_type_over_int_to_float():
    result = coerce(1, float | int, "x")
    assert result == 1 and type(result) is int


def test_union_converts_an_int_to_float_when_float_is_the_only_numeric_member():
    result = coerce(1, float | str, "x")
    assert result == 1.0 and type(result) is float


def test_union_of_path_and_null_gives_a_path():
    assert coerce("w.pt", Path | None, "weights") == Path("w.pt")


# --- coerce: containers -------------------------------------------------------------------------


def test_list_coerces_each_item():
    assert coerce([1, 2.5], list[float], "xs") == [1.0, 2.5]


def test_list_accepts_a_tuple_and_returns_a_list():
    assert coerce((1, 2), list[int], "xs") == [1, 2]


def test_list_rejects_a_bad_item():
    error = _rejects([1, "two"], list[int])
    assert "expected list of int" in error.message


def test_list_rejects_a_scalar():
    _rejects(1, list[int])


def test_fixed_tuple_accepts_a_list_of_the_right_length_and_returns_a_tuple():
    assert coerce([0.2, 1], tuple[float, float], "scale") == (0.2, 1.0)


@pytest.mark.parametrize("value", [[0.2], [0.2, 0.5, 1.0]])
def test_fixed_tuple_rejects_the_wrong_length(value):
    _rejects(value, tuple[float, float])


def test_fixed_tuple_checks_each_position():
    assert coerce(["a", 2], tuple[str, int], "pair") == ("a", 2)
    _rejects([2, "a"], tuple[str, int])


@pytest.mark.parametrize("value", [[], [0.5], [0.4913, 0.4821, 0.4465]])
def test_variadic_tuple_accepts_any_length(value):
    assert coerce(value, tuple[float, ...], "mean") == tuple(value)


def test_variadic_tuple_rejects_a_bad_item():
    _rejects([0.5, "x"], tuple[float, ...])


def test_dict_coerces_each_value():
    assert coerce({"a": 1}, dict[str, float], "m") == {"a": 1.0}


def test_dict_rejects_a_bad_value():
    _rejects({"a": "x"}, dict[str, int])


def test_dict_rejects_a_non_mapping():
    _rejects([("a", 1)], dict[str, int])


def test_dict_with_string_keys_rejects_other_keys():
    _rejects({1: 2}, dict[str, int])


# --- coerce: the error --------------------------------------------------------------------------


def test_mismatch_names_the_expected_type_and_the_value_given():
    error = _rejects("x", int)
    assert error.message == "expected int, got str 'x'"


def test_mismatch_carries_the_offending_key():
    with pytest.raises(SchemaError) as caught:
        coerce("x", int, "batch_size")
    assert caught.value.key == "batch_size"


# --- describe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotation, text",
    [
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (Path, "path"),
        (Any, "any value"),
        (type(None), "null"),
        (Literal["sgd", "lars"], "one of 'sgd', 'lars'"),
        (Optional[int], "int or null"),
        (int | str, "int or str"),
        (list[float], "list of float"),
        (tuple[float, ...], "list of float"),
        (tuple[float, float], "list of float, float"),
        (dict[str, int], "mapping"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_describe_names_an_annotation_for_users(annotation, text):
    assert describe(annotation) == text


# --- is_path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("annotation", [Path, Optional[Path], Path | None])
def test_is_path_recognises_a_path_and_an_optional_path(annotation):
    assert is_path(annotation)


@pytest.mark.parametrize("annotation", [str, list[Path], Any])
def test_is_path_is_false_for_other_annotations(annotation):
    assert not is_path(annotation)


# --- validate -----------------------------------------------------------------------------------

FIELDS = {
    "path": Field("path", Path, EMPTY),
    "temperature": Field("temperature", float, 0.5),
    "limit": Field("limit", Optional[int], None),
}


def test_validate_fills_defaults_for_keys_not_given():
    assert validate({"path": "x"}, FIELDS) == {"path": Path("x"), "temperature": 0.5, "limit": None}


def test_validate_coerces_given_values():
    assert validate({"path": "x", "temperature": 1}, FIELDS)["temperature"] == 1.0


def test_validate_rejects_an_unknown_key_with_a_close_match():
    with pytest.raises(SchemaError) as caught:
        validate({"path": "x", "temprature": 0.1}, FIELDS)
    assert caught.value.key == "temprature"
    assert "did you mean 'temperature'" in caught.value.message


def test_validate_unknown_key_lists_the_valid_keys():
    with pytest.raises(SchemaError) as caught:
        validate({"path": "x", "zzz": 1}, FIELDS)
    assert "Valid keys: path, temperature, limit" in caught.value.message


def test_validate_names_a_missing_required_key_and_its_type():
    with pytest.raises(SchemaError) as caught:
        validate({}, FIELDS)
    assert caught.value.key == "path"
    assert caught.value.message == "missing required key (expected path)"


def test_validate_reports_a_wrong_type_under_its_key():
    with pytest.raises(SchemaError) as caught:
        validate({"path": "x", "limit": "all"}, FIELDS)
    assert caught.value.key == "limit"
    assert "expected int or null" in caught.value.message


# --- fields_of ----------------------------------------------------------------------------------


class Projector:
    def __init__(self, input_dim: int, hidden_dim: int = 2048, batch_norm: bool = True) -> None:
        pass


def objective(encoder: Any, temperature: float, scale: tuple[float, float] = (0.1, 1.0), untyped=3) -> None:
    pass


@dataclasses.dataclass
class Section:
    size: int = 4
    items: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


def test_fields_of_reads_a_class_constructor_without_self():
    assert list(fields_of(Projector)) == ["input_dim", "hidden_dim", "batch_norm"]


def test_fields_of_excludes_injected_names():
    assert list(fields_of(Projector, frozenset({"input_dim"}))) == ["hidden_dim", "batch_norm"]


def test_fields_of_records_annotations_and_defaults():
    fields = fields_of(objective, frozenset({"encoder"}))
    assert fields["temperature"] == Field("temperature", float, EMPTY)
    assert fields["temperature"].required
    assert fields["scale"] == Field("scale", tuple[float, float], (0.1, 1.0))
    assert not fields["scale"].required


def test_fields_of_treats_an_unannotated_parameter_as_any():
    assert fields_of(objective)["untyped"].annotation is Any


def test_fields_of_uses_a_dataclass_default_factory_value():
    assert fields_of(Section)["items"].default == [1, 2]


def test_fields_of_rejects_a_factory_taking_kwargs():
    def factory(size: int = 1, **options: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"takes \*options: a component factory must list its parameters"):
        fields_of(factory)


def test_fields_of_rejects_a_factory_taking_varargs():
    def factory(*layers: int) -> None:
        pass

    with pytest.raises(TypeError, match=r"takes \*layers"):
        fields_of(factory)


def test_a_module_class_without_its_own_constructor_has_no_parameters():
    import torch

    class Plain(torch.nn.Module):
        pass

    assert fields_of(Plain) == {}
