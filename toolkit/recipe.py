"""Recipes: YAML files that name components and settings, validated before anything runs.

- Loaded with ``yaml.SafeLoader`` only (plus YAML 1.2 floats such as ``1e-3``): a recipe can
  never import code by string.
- ``extends: [base.yaml, ...]`` (paths relative to the extending file) are deep-merged in
  order, then the file itself; later wins; lists and scalars are replaced, mappings merged.
- Overrides ``key.path=value`` (values parsed as YAML) apply last.
- Every block is checked against its factory's signature; errors name the file, the line and
  the key path, with close matches for unknown keys.
- Parameters annotated ``pathlib.Path`` are resolved relative to the file that set them
  (relative to the working directory for command-line overrides).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from toolkit import compatibility, schema
from toolkit.components import Component, Resolved, fields_of, nested_kind
from toolkit.config import BestSelection, EvalConfig, ScheduleConfig, TrainerConfig
from toolkit.errors import PluginError, RecipeError
from toolkit.plugins import Plugins, UnknownComponentError

COMPONENT_SECTIONS: dict[str, str] = {
    "data": "datasource",
    "augmentation": "augmentation",
    "encoder": "encoder",
    "projector": "projector",
    "objective": "objective",
    "optimizer": "optimizer",
}
CONFIG_SECTIONS: dict[str, type] = {"trainer": TrainerConfig, "schedule": ScheduleConfig, "eval": EvalConfig}
TOP_LEVEL = ["name", "description", "plugins", *COMPONENT_SECTIONS, *CONFIG_SECTIONS]
REQUIRED = ["data", "augmentation", "encoder", "objective"]
DEFAULTS = {"projector": {"name": "identity"}, "optimizer": {"name": "sgd"}}

KeyPath = tuple[Any, ...]


class _RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that a recipe may not use."""


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.2), not as a string, and
    refuses what would make a recipe mean something other than it reads: a key given twice in
    one mapping (YAML would keep the last silently) and aliases (``*name``: besides hiding
    where a value comes from, nested aliases expand exponentially, the "billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _RefusedYAML(
                None, None, f"aliases (*{event.anchor}) are not allowed in recipes; repeat the value or share it "
                            f"through `extends:`", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in first_line:
                raise _RefusedYAML(
                    None, None, f"key {key!r} is given twice in one mapping (first at line {first_line[key]}); "
                                f"keep one", key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclasses.dataclass
class Origin:
    file: Path | None  # None: a command-line override
    line: int | None
    text: str = ""

    def __str__(self) -> str:
        if self.file is None:
            return f"override {self.text!r}" if self.text else "recipe (a dict)"
        return f"{self.file}:{self.line}" if self.line else str(self.file)

    @property
    def base_dir(self) -> Path:
        return self.file.parent if self.file is not None else Path.cwd()


@dataclasses.dataclass
class RecipeDocument:
    """A merged, not yet validated recipe and where each of its keys came from."""

    values: dict[str, Any]
    origins: dict[KeyPath, Origin]
    path: Path | None

    def origin(self, key_path: KeyPath) -> Origin:
        for end in range(len(key_path), -1, -1):
            if key_path[:end] in self.origins:
                return self.origins[key_path[:end]]
        return Origin(self.path, None)

    def error(self, key_path: KeyPath, message: str) -> RecipeError:
        dotted = ".".join(map(str, key_path)) or "(top level)"
        return RecipeError(f"{self.origin(key_path)}: {dotted}: {message}")


@dataclasses.dataclass
class Recipe:
    """A validated recipe with every default filled in; ``values`` is plain YAML data and
    ``components`` the validated component blocks, ready to build: one per section of
    :data:`COMPONENT_SECTIONS`, ``eval.evaluators.<i>``, and the evaluation data sources
    ``eval.train_data`` / ``eval.test_data`` (``data`` with those settings merged over it)."""

    values: dict[str, Any]
    path: Path | None
    components: dict[str, Resolved] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.values["name"]

    def block(self, key: str) -> dict[str, Any]:
        """A section as plain data: ``recipe.block("encoder")["name"]``."""
        return self.values[key]

    def settings(self, key: str) -> Any:
        """``trainer``/``schedule``/``eval`` as their dataclass."""
        return CONFIG_SECTIONS[key](**self.values[key])

    def build(self, key: str, **available: Any) -> Any:
        """The component of ``key`` (a key of ``components``), given the injected values it asks for."""
        return self.components[key].build(**available)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.values, sort_keys=False, default_flow_style=None, width=100)


def load(path: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> RecipeDocument:
    """Read ``path`` with its ``extends`` chain and apply ``overrides``. ``path`` may also be the
    recipe itself, as a dict (the Python API): its relative paths, ``extends`` included, then
    start at the working directory."""
    if isinstance(path, Mapping):
        values = copy.deepcopy(dict(path))
        bases = values.pop("extends", [])
        merged: dict[str, Any] = {}
        origins: dict[KeyPath, Origin] = {}
        for base in [bases] if isinstance(bases, str) else bases:
            base_values, base_origins = _load_with_extends(Path(base).resolve(), chain=())
            merged = _deep_merge(merged, base_values)
            origins.update(base_origins)
        document = RecipeDocument(_deep_merge(merged, values), origins, None)
        for override in overrides:
            _apply_override(document, override)
        return document
    path = Path(path)
    values, origins = _load_with_extends(path.resolve(), chain=())
    document = RecipeDocument(values, origins, path)
    for override in overrides:
        _apply_override(document, override)
    return document


def resolve(document: RecipeDocument, plugins: Plugins, trust_plugins: bool = True) -> Recipe:
    """Validate ``document`` against the registered components; fill every default.

    ``trust_plugins=False`` (a recipe read from a run directory someone else may have written)
    refuses to import the local plugin files the recipe lists, unless they are loaded already."""
    values = document.values
    for key in values:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(str(key), TOP_LEVEL, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise document.error((key,), f"unknown section{hint or '.'} Valid sections: {', '.join(TOP_LEVEL)}")
    for key in REQUIRED:
        if key not in values:
            raise document.error((), f"missing required section {key!r} (a block like `{key}: {{name: ...}}`)")
    name = values.get("name") or (document.path.stem if document.path else "recipe")
    resolved: dict[str, Any] = {"name": name}
    if "description" in values:
        resolved["description"] = values["description"]
    if "plugins" in values:
        resolved["plugins"] = _load_local_plugins(document, plugins, trust_plugins)
    components: dict[str, Resolved] = {}
    for section, kind in COMPONENT_SECTIONS.items():
        components[section] = _resolve_component(document, (section,), kind, values.get(section, DEFAULTS.get(section)),
                                                 plugins)
        resolved[section] = plain_block(components[section])
    for section, config_type in CONFIG_SECTIONS.items():
        resolved[section] = _resolve_config(document, (section,), values.get(section) or {}, config_type)
    resolved["eval"] = _resolve_eval(document, resolved["eval"], components, plugins)
    compatibility.check(resolved, plugins, str(document.path or "recipe"))
    return Recipe(resolved, document.path, components)


def load_and_resolve(path: str | Path, overrides: Sequence[str], plugins: Plugins) -> Recipe:
    return resolve(load(path, overrides), plugins)


def resolve_block(plugins: Plugins, kind: str, block: Any, where: str = "recipe") -> Resolved:
    """Validate one component block outside a recipe file (an export's ``encoder.json``, a
    test's parameters); ``where`` starts error messages."""
    return _resolve_component(RecipeDocument({}, {}, Path(where)), (), kind, block, plugins)


def build(plugins: Plugins, kind: str, block: Any, **available: Any) -> Any:
    """Validate ``block`` (``{name: ..., **params}``) and build it: :func:`resolve_block` then
    :meth:`~toolkit.components.Resolved.build`."""
    return resolve_block(plugins, kind, block).build(**available)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested recipe as ``{"dotted.key": value}`` (``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": 0.1}``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plain_block(resolved: Resolved) -> dict[str, Any]:
    """A resolved block as YAML data (``{name: ..., **params}``; tuples as lists, paths as strings)."""
    params = {k: plain_block(v) if isinstance(v, Resolved) else v for k, v in resolved.params.items()}
    return {"name": resolved.component.name, **_plain(params)}


def _load_local_plugins(document: RecipeDocument, plugins: Plugins, trust: bool) -> list[str]:
    """``plugins: [my_objective.py, local_plugins/]``: files and folders of plugin modules,
    relative to the recipe that lists them, registered before the recipe is validated."""
    entries = document.values["plugins"]
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise document.error(("plugins",), "expected a list of paths to plugin files or folders")
    paths = [(document.origin(("plugins", i)).base_dir / entry).resolve() for i, entry in enumerate(entries)]
    try:
        untrusted = [path for path in plugins.local_files(paths) if not plugins.has_local(path)]
        if not trust and untrusted:
            raise document.error(("plugins",), f"this recipe would import and run the Python code in "
                                 f"{', '.join(map(str, untrusted))}. A recipe from a run directory runs code only "
                                 f"with --trust-plugins (read the files first), or when you load the same files "
                                 f"yourself with --plugins-dir")
        plugins.add_local(paths)
    except PluginError as error:
        raise document.error(("plugins",), str(error)) from None
    return [str(path) for path in paths]


def _resolve_component(
    document: RecipeDocument, key_path: KeyPath, kind: str, block: Any, plugins: Plugins
) -> Resolved:
    """Validate a component block (a bare name stands for ``{name: ...}``); nested component
    parameters (annotated with an interface, :mod:`toolkit.components`) are resolved in turn."""
    if isinstance(block, str):
        block = {"name": block}
    if not isinstance(block, dict) or not isinstance(block.get("name"), str):
        raise document.error(key_path, f"expected a mapping with a `name` (one of: {', '.join(plugins.names(kind))}), "
                                       f"got {block!r}")
    try:
        component: Component = plugins.get(kind, block["name"])
    except UnknownComponentError as error:
        raise document.error(key_path + ("name",), str(error)) from None
    fields = fields_of(kind, component.factory)
    nested = {key: nested_kind(field.annotation) for key, field in fields.items() if nested_kind(field.annotation)}
    given = {k: v for k, v in block.items() if k != "name"}
    params = _validate(document, key_path, {k: v for k, v in given.items() if k not in nested},
                       {k: f for k, f in fields.items() if k not in nested}, strict=False)
    for key, nested_kind_name in nested.items():
        if key not in given and fields[key].required:
            raise document.error(key_path + (key,), f"missing required {nested_kind_name} block "
                                                    f"(`{key}: {{name: ...}}`)")
        params[key] = _resolve_component(document, key_path + (key,), nested_kind_name,
                                         given.get(key, fields[key].default), plugins)
    unknown = [key for key in given if key not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "."
        raise document.error(key_path + (unknown[0],), f"unknown key{hint} Valid keys: {', '.join(fields) or 'none'}")
    return Resolved(component, {key: params[key] for key in fields})


def _resolve_config(document: RecipeDocument, key_path: KeyPath, block: Any, config_type: type) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise document.error(key_path, f"expected a mapping, got {block!r}")
    resolved = _plain(_validate(document, key_path, block, schema.fields_of(config_type)))
    try:
        config_type(**resolved)  # checks across fields, in the dataclass's __post_init__
    except schema.SchemaError as error:
        raise document.error(key_path + (error.key,), error.message) from None
    return resolved


def _resolve_eval(
    document: RecipeDocument, block: dict[str, Any], components: dict[str, Resolved], plugins: Plugins
) -> dict[str, Any]:
    """Resolve the evaluators into ``components["eval.evaluators.<i>"]`` and the evaluation data
    sources, ``data`` with ``train_data`` / ``test_data`` over it, into ``components["eval.<role>"]``."""
    result = dict(block)
    result["evaluators"] = []
    for i, entry in enumerate(block["evaluators"]):
        components[f"eval.evaluators.{i}"] = _resolve_component(document, ("eval", "evaluators", i), "evaluator",
                                                                entry, plugins)
        result["evaluators"].append(plain_block(components[f"eval.evaluators.{i}"]))
    if block["select_best"] is not None:
        result["select_best"] = _plain(_validate(document, ("eval", "select_best"), block["select_best"],
                                                 schema.fields_of(BestSelection)))
    data = components["data"]
    data_fields = fields_of("datasource", data.component.factory)
    for role, split in (("train_data", "train"), ("test_data", "test")):
        settings = {"split": split, **block[role]}
        for key in settings:
            if key not in data_fields:
                raise document.error(("eval", role, key), f"not a parameter of data source "
                                     f"{data.component.name!r}; valid: {', '.join(data_fields)}")
        own = _validate(document, ("eval", role), settings, {k: f for k, f in data_fields.items() if k in settings})
        components[f"eval.{role}"] = Resolved(data.component, {**data.params, **own})
        result[role] = _plain(own)
    return result


def _validate(
    document: RecipeDocument, key_path: KeyPath, params: dict[str, Any], fields: dict[str, schema.Field],
    strict: bool = True,
) -> dict[str, Any]:
    """``params`` checked against ``fields`` with defaults filled in, coerced to their annotations;
    paths resolved against the file that set them. ``strict=False`` leaves unknown keys to the caller."""
    try:
        resolved = schema.validate({k: v for k, v in params.items() if strict or k in fields}, fields)
    except schema.SchemaError as error:
        raise document.error(key_path + (error.key,), error.message) from None
    for key, value in resolved.items():
        if value is not None and schema.is_path(fields[key].annotation) and key in params:
            resolved[key] = (document.origin(key_path + (key,)).base_dir / value).resolve()
    return resolved


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples become lists, paths strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _load_with_extends(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[KeyPath, Origin]]:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"{chain[-1]}: extends: recipes extend each other in a cycle: {cycle}")
    if not path.is_file():
        where = f"{chain[-1]}: extends: " if chain else ""
        raise RecipeError(f"{where}recipe file not found: {path}")
    values, origins = _read_yaml(path)
    bases = values.pop("extends", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{origins.get(('extends',), path)}: extends: expected a path or a list of paths")
    merged: dict[str, Any] = {}
    merged_origins: dict[KeyPath, Origin] = {}
    for base in bases:
        base_values, base_origins = _load_with_extends((path.parent / base).resolve(), chain + (path,))
        merged = _deep_merge(merged, base_values)
        merged_origins.update(base_origins)
    merged_origins.update(origins)
    return _deep_merge(merged, values), merged_origins


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[KeyPath, Origin]]:
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=RecipeLoader)
        values = yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        what = "" if isinstance(error, _RefusedYAML) else "not valid YAML: "
        raise RecipeError(f"{path}{line}: {what}{getattr(error, 'problem', error)}") from None
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise RecipeError(f"{path}:1: a recipe must be a mapping of sections, got {type(values).__name__}")
    origins: dict[KeyPath, Origin] = {}
    _collect_origins(node, (), path, origins)
    return values, origins


def _collect_origins(node: yaml.Node, key_path: KeyPath, path: Path, origins: dict[KeyPath, Origin]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = key_path + (key_node.value,)
            origins[child] = Origin(path, key_node.start_mark.line + 1)
            _collect_origins(value_node, child, path, origins)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            origins[key_path + (i,)] = Origin(path, item.start_mark.line + 1)
            _collect_origins(item, key_path + (i,), path, origins)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge recursively, except that a component block naming another component
    replaces the base block (its parameters belong to the old component)."""
    result = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and not _renames(result[key], value):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _renames(base: dict[str, Any], over: dict[str, Any]) -> bool:
    return "name" in over and over["name"] != base.get("name")


def _apply_override(document: RecipeDocument, override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise RecipeError(f"override {override!r}: expected key.path=value, e.g. trainer.batch_size=128")
    try:
        value = yaml.load(raw, Loader=RecipeLoader) if raw else ""
    except yaml.YAMLError as error:
        raise RecipeError(f"override {override!r}: value is not valid YAML: {error}") from None
    if not all(key.split(".")):
        raise RecipeError(f"override {override!r}: empty key in {key!r}; expected key.path=value")
    parts: list[Any] = [int(p) if p.isdigit() else p for p in key.split(".")]
    target: Any = document.values
    for depth, part in enumerate(parts[:-1]):
        if isinstance(target, list):
            if not isinstance(part, int) or part >= len(target):
                raise RecipeError(f"override {override!r}: {'.'.join(map(str, parts[:depth + 1]))} is not an index "
                                  f"of a list of {len(target)}")
            target = target[part]
            continue
        if not isinstance(target.get(part), (dict, list)):
            target[part] = {}
            document.origins[tuple(parts[:depth + 1])] = Origin(None, None, override)
        target = target[part]
    last = parts[-1]
    if isinstance(target, list):
        if not isinstance(last, int) or last > len(target):
            raise RecipeError(f"override {override!r}: index out of range for a list of {len(target)}")
        target[last:last + 1] = [value]
    else:
        target[last] = value
    document.origins[tuple(parts)] = Origin(None, None, override)
    for key_path in [p for p in document.origins if p[: len(parts)] == tuple(parts) and len(p) > len(parts)]:
        document.origins[key_path] = Origin(None, None, override)
