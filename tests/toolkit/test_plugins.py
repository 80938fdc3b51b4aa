"""Plugin discovery, the component registry and ``selfsup plugins``.

Third-party plugins are simulated without installing anything: small modules written into
``tmp_path`` are offered as extra ``selfsup`` entry points next to the real ones.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import pytest

import toolkit.plugins
from toolkit import hookimpl
from toolkit.cli import main
from toolkit.hookspecs import PROJECT
from toolkit.plugins import KINDS, Plugins, PluginError, UnknownComponentError, discover

TOOLKIT_VERSION = importlib.metadata.version("selfsup-toolkit")

BROKEN_AT_IMPORT = 'raise RuntimeError("libfoo.so: cannot open shared object file")'

RAISES_WHILE_REGISTERING = """
    from toolkit import hookimpl

    @hookimpl
    def register_encoders(register):
        register("half-registered", object)

    @hookimpl
    def register_objectives(register):
        raise ValueError("objective table is corrupt")
"""

REGISTERS_RESNET18 = """
    from toolkit import hookimpl

    @hookimpl
    def register_encoders(register):
        register("resnet18", object)
"""

REGISTERS_AN_EVALUATOR = """
    from toolkit import hookimpl

    @hookimpl
    def register_evaluators(register):
        register("always-one", object)
"""

MISNAMES_A_HOOK_ARGUMENT = """
    from toolkit import hookimpl

    @hookimpl
    def register_encoders(reg):
        reg("never", object)
"""

RESNETS = ("resnet18", "resnet34", "resnet50")


@pytest.fixture(autouse=True)
def plugin_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts lenient and with nothing blocked, whatever the developer's shell says."""
    monkeypatch.delenv("SELFSUP_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("SELFSUP_DISABLE_PLUGINS", raising=False)


@pytest.fixture
def install_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str, str], None]]:
    """``install_plugin(name, source)`` offers ``source`` as the ``selfsup`` entry point ``name``."""
    real_entry_points = importlib.metadata.entry_points
    extra: list[importlib.metadata.EntryPoint] = []

    def entry_points(**params: str) -> object:
        found = real_entry_points(**params)
        # Other callers (triton, when torch first imports it) must get the real answer untouched.
        return [*found, *extra] if params.get("group") == PROJECT else found

    def install(name: str, source: str) -> None:
        module = f"selfsup_test_plugin_{name.replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        extra.append(importlib.metadata.EntryPoint(name=name, value=module, group=PROJECT))

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(toolkit.plugins.importlib.metadata, "entry_points", entry_points)
    yield install
    for entry_point in extra:
        sys.modules.pop(entry_point.value, None)


@pytest.fixture
def plugins() -> Plugins:
    """A freshly discovered set (not conftest's shared default), so tests may add and remove plugins."""
    return discover()


@pytest.fixture
def temporary_plugin(plugins: Plugins) -> Iterator[ModuleType]:
    """A plugin object added for one test and removed after it."""

    @hookimpl
    def register_encoders(register: Callable) -> None:
        register("tiny-linear", _factory)

    @hookimpl
    def register_recipes(register: Callable) -> None:
        register("/opt/recipes/tiny-linear.yaml")

    module = _plugin_module("temporary_plugin", register_encoders, register_recipes)
    plugins.add("temporary", module)
    yield module
    plugins.remove("temporary")


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI discover plugins again instead of reusing the process-wide set."""
    monkeypatch.setattr(toolkit.plugins, "_default", None)


# Built-in plugins


def test_builtin_plugins_are_discovered_through_entry_points(plugins: Plugins) -> None:
    found = {name: (info.module, info.distribution, info.builtin, info.error) for name, info in plugins.infos.items()}

    assert found["core"] == ("toolkit.builtins", "selfsup-toolkit", True, None)
    assert found["image"] == ("selfsup_image.plugin", "selfsup-toolkit", True, None)
    assert all(info[2] and info[3] is None for info in found.values())


def test_builtin_plugins_carry_the_toolkit_version(plugins: Plugins) -> None:
    assert {info.version for info in plugins.infos.values()} == {TOOLKIT_VERSION}


@pytest.mark.parametrize(
    ("kind", "name", "plugin"),
    [
        ("encoder", "resnet18", "image"),
        ("objective", "nt-xent", "image"),
        ("augmentation", "simclr", "image"),
        ("datasource", "image-jpeg-npz", "image"),
        ("evaluator", "knn", "core"),
        ("projector", "mlp", "core"),
    ],
)
def test_builtin_plugins_register_their_components(plugins: Plugins, kind: str, name: str, plugin: str) -> None:
    component = plugins.get(kind, name)

    assert (component.kind, component.name, component.plugin) == (kind, name, plugin)
    assert callable(component.factory)
    assert name in plugins.infos[plugin].components[kind]


def test_plugin_info_lists_the_hooks_a_plugin_implements(plugins: Plugins) -> None:
    assert plugins.infos["core"].hooks == ["register_evaluators", "register_optimizers", "register_projectors",
                                           "render_items"]


# Plugins that fail to import


def test_a_plugin_that_fails_to_import_is_reported_with_its_error(
    install_plugin: Callable[[str, str], None],
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)

    info = discover().infos["broken"]

    assert info.error is not None
    assert info.error.startswith("RuntimeError: libfoo.so: cannot open shared object file")
    assert "selfsup_test_plugin_broken.py:1" in info.error
    assert info.components == {}


def test_a_plugin_that_fails_to_import_does_not_stop_the_others(
    install_plugin: Callable[[str, str], None],
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)
    install_plugin("extra", REGISTERS_AN_EVALUATOR)

    plugins = discover()

    assert plugins.get("encoder", "resnet18").plugin == "image"
    assert plugins.get("projector", "mlp").plugin == "core"
    assert plugins.get("evaluator", "always-one").plugin == "extra"


def test_strict_mode_makes_an_import_failure_fatal(
    install_plugin: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)
    monkeypatch.setenv("SELFSUP_STRICT_PLUGINS", "1")

    with pytest.raises(PluginError, match=r"plugin 'broken' failed to import: RuntimeError: libfoo\.so"):
        discover()


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_strict_mode_is_off_for_empty_and_negative_values(
    install_plugin: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)
    monkeypatch.setenv("SELFSUP_STRICT_PLUGINS", value)

    assert discover().infos["broken"].error is not None


# Plugins that fail while registering


def test_a_plugin_whose_register_hook_raises_is_reported(install_plugin: Callable[[str, str], None]) -> None:
    install_plugin("faulty", RAISES_WHILE_REGISTERING)

    info = discover().infos["faulty"]

    assert info.error is not None
    assert info.error.startswith("ValueError: objective table is corrupt")
    assert "selfsup_test_plugin_faulty.py" in info.error


def test_a_plugin_whose_register_hook_raises_leaves_nothing_registered(
    install_plugin: Callable[[str, str], None],
) -> None:
    install_plugin("faulty", RAISES_WHILE_REGISTERING)

    plugins = discover()

    assert "half-registered" not in plugins.names("encoder")
    assert plugins.infos["faulty"].components == {}
    assert plugins.manager.get_plugin("faulty") is None


def test_a_plugin_whose_register_hook_raises_does_not_stop_the_others(
    install_plugin: Callable[[str, str], None],
) -> None:
    install_plugin("faulty", RAISES_WHILE_REGISTERING)

    plugins = discover()

    assert set(RESNETS) <= set(plugins.names("encoder"))
    assert plugins.get("evaluator", "knn").plugin == "core"


def test_strict_mode_makes_a_register_failure_fatal(
    install_plugin: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("faulty", RAISES_WHILE_REGISTERING)
    monkeypatch.setenv("SELFSUP_STRICT_PLUGINS", "1")

    with pytest.raises(PluginError, match=r"plugin 'faulty' failed while registering: ValueError: objective table"):
        discover()


def test_a_plugin_whose_hook_signature_does_not_match_the_spec_is_reported(
    install_plugin: Callable[[str, str], None],
) -> None:
    install_plugin("misnamed", MISNAMES_A_HOOK_ARGUMENT)

    plugins = discover()

    assert "reg" in (plugins.infos["misnamed"].error or "")
    assert plugins.get("encoder", "resnet18").plugin == "image"


# Name clashes and blocking


def test_two_plugins_registering_the_same_component_name_is_an_error_naming_both(
    install_plugin: Callable[[str, str], None],
) -> None:
    install_plugin("rival", REGISTERS_RESNET18)

    with pytest.raises(PluginError, match="encoder 'resnet18'") as raised:
        discover()

    assert "'image'" in str(raised.value)
    assert "'rival'" in str(raised.value)


def test_a_component_name_clash_is_fatal_even_outside_strict_mode(
    install_plugin: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("rival", REGISTERS_RESNET18)
    monkeypatch.setenv("SELFSUP_STRICT_PLUGINS", "0")

    with pytest.raises(PluginError, match="registered by both"):
        discover()


def test_a_component_name_clash_is_resolved_by_blocking_one_plugin(
    install_plugin: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("rival", REGISTERS_RESNET18)
    monkeypatch.setenv("SELFSUP_DISABLE_PLUGINS", "rival")

    assert discover().get("encoder", "resnet18").plugin == "image"


def test_disabling_a_plugin_removes_it_and_its_components(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSUP_DISABLE_PLUGINS", "image")

    plugins = discover()

    assert "image" not in plugins.infos
    assert not set(RESNETS) & set(plugins.names("encoder"))
    assert all(c.plugin != "image" for kind in KINDS for c in plugins.components(kind))


def test_disabling_a_plugin_keeps_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSUP_DISABLE_PLUGINS", "image")

    plugins = discover()

    assert "image" not in plugins.infos and "core" in plugins.infos
    assert plugins.get("projector", "mlp").plugin == "core"


def test_several_plugins_can_be_disabled_in_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSUP_DISABLE_PLUGINS", " image , core ")

    assert not {"image", "core"} & set(discover().infos)


def test_a_disabled_plugin_is_not_even_imported(
    install_plugin: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)
    monkeypatch.setenv("SELFSUP_DISABLE_PLUGINS", "broken")
    monkeypatch.setenv("SELFSUP_STRICT_PLUGINS", "1")

    assert "broken" not in discover().infos


# Looking components up


def test_an_unknown_component_name_suggests_close_matches(plugins: Plugins) -> None:
    with pytest.raises(UnknownComponentError, match=r"no encoder named 'resnet81'\. Did you mean 'resnet18'"):
        plugins.get("encoder", "resnet81")


def test_an_unknown_component_error_lists_the_registered_names(plugins: Plugins) -> None:
    with pytest.raises(UnknownComponentError, match="Registered encoders: .*resnet18, resnet34, resnet50"):
        plugins.get("encoder", "resnet81")


def test_an_unknown_component_without_close_matches_suggests_nothing(plugins: Plugins) -> None:
    with pytest.raises(UnknownComponentError) as raised:
        plugins.get("objective", "barlow-twins")

    assert "Did you mean" not in str(raised.value)


def test_an_unknown_component_error_is_a_key_error(plugins: Plugins) -> None:
    with pytest.raises(KeyError):
        plugins.get("projector", "transformer")


# Adding and removing plugins at run time


def test_an_added_plugin_registers_its_components(plugins: Plugins, temporary_plugin: ModuleType) -> None:
    assert plugins.get("encoder", "tiny-linear").plugin == "temporary"
    assert "tiny-linear" in plugins.names("encoder") and set(RESNETS) <= set(plugins.names("encoder"))


def test_an_added_plugin_is_listed_as_a_third_party_plugin(plugins: Plugins, temporary_plugin: ModuleType) -> None:
    info = plugins.infos["temporary"]

    assert (info.module, info.builtin, info.version, info.error) == ("temporary_plugin", False, None, None)
    assert info.hooks == ["register_encoders", "register_recipes"]
    assert info.components == {"encoder": ["tiny-linear"]}


def test_an_added_plugin_registers_its_recipes(plugins: Plugins, temporary_plugin: ModuleType) -> None:
    assert plugins.recipes() == {"temporary": ["/opt/recipes/tiny-linear.yaml"]}


def test_a_removed_plugin_loses_its_components_hooks_and_listing(
    plugins: Plugins, temporary_plugin: ModuleType
) -> None:
    plugins.remove("temporary")

    assert "tiny-linear" not in plugins.names("encoder")
    assert "temporary" not in plugins.infos
    assert plugins.manager.get_plugin("temporary") is None
    assert plugins.recipes() == {}


def test_removing_a_plugin_leaves_the_others_alone(plugins: Plugins, temporary_plugin: ModuleType) -> None:
    before = {kind: [n for n in plugins.names(kind) if n != "tiny-linear"] for kind in KINDS}
    plugins.remove("temporary")

    assert {kind: plugins.names(kind) for kind in KINDS} == before
    assert "temporary" not in plugins.infos and {"core", "image"} <= set(plugins.infos)


def test_removing_an_unknown_plugin_does_nothing(plugins: Plugins) -> None:
    before = sorted(plugins.infos)
    plugins.remove("never-added")

    assert sorted(plugins.infos) == before


def test_adding_a_plugin_under_a_taken_name_is_an_error(plugins: Plugins) -> None:
    with pytest.raises(PluginError, match="two plugins are named 'image'"):
        plugins.add("image", _plugin_module("another_image"))


@pytest.mark.parametrize(
    ("name", "factory", "message"),
    [
        ("", object, "an invalid name ''"),
        ("tiny", "not-callable", "encoder 'tiny' with a non-callable factory"),
    ],
    ids=["empty-name", "non-callable-factory"],
)
def test_a_plugin_registering_an_invalid_component_is_an_error(
    plugins: Plugins, name: str, factory: object, message: str
) -> None:
    @hookimpl
    def register_encoders(register: Callable) -> None:
        register(name, factory)

    with pytest.raises(PluginError, match=f"plugin 'invalid' registered .*{message}"):
        plugins.add("invalid", _plugin_module("invalid_plugin", register_encoders))


def test_a_plugin_rejected_for_a_name_clash_leaves_no_trace(plugins: Plugins) -> None:
    @hookimpl
    def register_encoders(register: Callable) -> None:
        register("mine", _factory)
        register("resnet18", _factory)

    with pytest.raises(PluginError):
        plugins.add("rival", _plugin_module("rival_plugin", register_encoders))

    assert "mine" not in plugins.names("encoder")
    assert plugins.manager.get_plugin("rival") is None
    assert "rival" not in plugins.infos


# selfsup plugins


def test_plugins_command_hides_builtin_plugins_but_names_them(
    fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("no third-party plugins installed; built-in: core, image")
    assert "(selfsup plugins --all lists them)" in out


def test_plugins_all_lists_the_builtin_plugins(fresh_default: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--all"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert f"core {TOOLKIT_VERSION} (built-in)" in lines
    assert f"image {TOOLKIT_VERSION} (built-in)" in lines


def test_plugins_command_lists_components_and_hooks_by_kind(
    fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["plugins", "--all"])

    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["encoders:", "resnet18,", "resnet34,", "resnet50,", "timm"] in lines
    assert ["evaluators:", "knn,", "linear-probe"] in lines
    assert ["optimizers:", "sgd,", "adamw,", "lars"] in lines
    assert ["hooks:", "register_evaluators,", "register_optimizers,", "register_projectors,", "render_items"] in lines


def test_plugins_command_reports_a_plugin_that_failed_to_load(
    install_plugin: Callable[[str, str], None], fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)

    assert main(["plugins"]) == 0

    out = capsys.readouterr().out
    assert "broken (selfsup_test_plugin_broken)" in out
    assert "  FAILED TO LOAD: RuntimeError: libfoo.so: cannot open shared object file" in out


def test_plugins_json_lists_name_version_and_components(
    fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--json", "--all"]) == 0

    listing = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listing["core"]["version"] == TOOLKIT_VERSION
    assert listing["core"]["components"] == {"projector": ["identity", "mlp"], "evaluator": ["knn", "linear-probe"],
                                             "optimizer": ["sgd", "adamw", "lars"]}
    assert listing["image"]["components"]["encoder"] == ["resnet18", "resnet34", "resnet50", "timm"]
    assert listing["image"]["components"]["objective"][0] == "nt-xent"


def test_plugins_json_lists_builtin_plugins_before_third_party_ones(
    install_plugin: Callable[[str, str], None], fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("aardvark", REGISTERS_AN_EVALUATOR)

    main(["plugins", "--json", "--all"])

    listing = json.loads(capsys.readouterr().out)
    builtin = [entry["builtin"] for entry in listing]
    assert builtin == sorted(builtin, reverse=True) and listing[-1]["name"] == "aardvark"


def test_plugins_json_without_all_lists_only_third_party_plugins(
    install_plugin: Callable[[str, str], None], fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("aardvark", REGISTERS_AN_EVALUATOR)

    main(["plugins", "--json"])

    assert [entry["name"] for entry in json.loads(capsys.readouterr().out)] == ["aardvark"]


def test_plugins_json_reports_load_errors(
    install_plugin: Callable[[str, str], None], fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("broken", BROKEN_AT_IMPORT)

    main(["plugins", "--json"])

    listing = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listing["broken"]["error"].startswith("RuntimeError: libfoo.so")
    assert "core" not in listing


def _factory() -> None:
    """A stand-in component factory: the registry only needs something callable."""


def _plugin_module(name: str, *hooks: Callable) -> ModuleType:
    module = ModuleType(name)
    for hook in hooks:
        setattr(module, hook.__name__, hook)
    return module


def test_a_plugin_that_calls_sys_exit_at_import_fails_alone(
    install_plugin: Callable[[str, str], None], fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("quitter", "import sys\nsys.exit(3)\n")
    assert main(["plugins", "--all"]) == 0
    output = capsys.readouterr().out
    assert "quitter" in output and "FAILED TO LOAD: PluginExited: the plugin called sys.exit(3)" in output
    assert "image 0.1.0 (built-in)" in output


def test_a_plugin_that_prints_at_import_keeps_the_json_listing_valid(
    install_plugin: Callable[[str, str], None], fresh_default: None, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("chatty", "print('hello from a plugin')\nfrom toolkit import hookimpl\n\n"
                             "@hookimpl\ndef register_encoders(register):\n    print('registering')\n")
    assert main(["plugins", "--json"]) == 0
    captured = capsys.readouterr()
    listing = json.loads(captured.out)
    assert [info["name"] for info in listing] == ["chatty"]
    assert "hello from a plugin" in captured.err and "registering" in captured.err
