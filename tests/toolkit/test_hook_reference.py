"""Meta-tests: every hookspec is documented with its exact signature and exercised by a test."""

from __future__ import annotations

import inspect

import pytest

from toolkit import hookspecs

from conftest import ROOT

HOOKS = {name: spec for name, spec in vars(hookspecs).items() if hasattr(spec, "selfsup_spec")}
REFERENCE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
TESTS = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("*.py")
         if path.name != "test_hook_reference.py"}


def test_there_is_a_hook_per_component_kind_and_per_lifecycle_event():
    assert len(HOOKS) == 15


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_signature_appears_in_the_reference(name):
    """As documented: without the arguments that are deprecated (``warn_on_impl_args``)."""
    deprecated = HOOKS[name].selfsup_spec.get("warn_on_impl_args") or {}
    signature = inspect.signature(HOOKS[name])
    signature = signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in deprecated])
    assert f"def {name}{str(signature).replace(chr(39), '')}" in REFERENCE


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_docstring(name):
    assert inspect.getdoc(HOOKS[name])


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_implemented_in_some_test(name):
    assert any(f"def {name}(" in text for text in TESTS.values()), f"no test implements {name}"
