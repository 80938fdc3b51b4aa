"""Plugin discovery and the component registry.

Plugins are found through the ``selfsup`` entry-point group. Each entry point is loaded on its
own, so one that fails to import is recorded (name and error) while the others keep working;
``SELFSUP_STRICT_PLUGINS=1`` turns such a failure into an error,
``SELFSUP_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name and
``SELFSUP_TRACE_PLUGINS=1`` prints every hook call. Local modules without packaging are added
with :meth:`Plugins.add_local`. Built-in plugins are found
the same way as third-party ones: the core never imports them by name.
"""

from __future__ import annotations

import difflib
import contextlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import pluggy

from toolkit import hookspecs
from toolkit.components import KINDS, Component, fields_of
from toolkit.errors import PluginError, RecipeError

class UnknownComponentError(RecipeError, KeyError):
    """A recipe named a component that no loaded plugin registers."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class PluginInfo:
    """What ``selfsup plugins`` shows for one plugin."""

    name: str
    module: str
    version: str | None
    distribution: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    recipes: list[str] = field(default_factory=list)
    error: str | None = None


class Plugins:
    """The loaded plugins: a pluggy manager, a component registry and a load report."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        if trace_plugins():
            self.manager.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
            self.manager.enable_tracing()
        self.infos: dict[str, PluginInfo] = {}
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def add(self, name: str, module: ModuleType, info: PluginInfo | None = None) -> None:
        """Register ``module`` as plugin ``name`` and collect what it registers.

        A plugin whose hooks do not match the specs (a misspelled hook name included), or that
        raises while registering, is recorded with its error and leaves nothing behind (fatal
        with SELFSUP_STRICT_PLUGINS=1). A name clash with another plugin's component is always an error.
        """
        if name in self.infos and self.infos[name].error is None:
            raise PluginError(f"two plugins are named {name!r}; rename one entry point")
        info = info or PluginInfo(name, getattr(module, "__name__", type(module).__name__), None, None, builtin=False)
        self.infos[name] = info
        try:
            with _plugin_code():
                self.manager.register(module, name=name)
                _check_hook_names(name, module)
                info.hooks = sorted(c.name for c in self.manager.get_hookcallers(module) or [])
                for kind, spec in KINDS.items():
                    self._collect(name, spec.hook, lambda n, f, kind=kind: self._add_component(kind, n, f, name))
                self._collect(name, "register_recipes", lambda path: info.recipes.append(str(path)))
        except PluginError:
            self._discard(name, module)
            self.infos.pop(name, None)
            raise
        except Exception as error:  # a plugin's own bug must not take the others down
            self._discard(name, module)
            info.error = str(error) if isinstance(error, UnknownHook) else _describe(error)
            if strict_plugins():
                raise PluginError(f"plugin {name!r} failed while registering: {info.error}") from error

    def add_local(self, paths: list[Path]) -> list[str]:
        """Register Python files, and every ``*.py`` file of folders, as plugins ``local:<stem>``.

        For plugins without packaging (``--plugins-dir``, a recipe's ``plugins:`` list). They were
        asked for explicitly, so a file that fails to import is an error, not a report. Loading
        the same file twice is a no-op. Returns the plugin names.
        """
        names = []
        for file in self.local_files(paths):
            name = f"local:{file.stem}"
            names.append(name)
            if self.has_local(file):
                continue
            self.add(name, _import_file(file), PluginInfo(name, str(file.resolve()), None, None, builtin=False))
        return names

    @staticmethod
    def local_files(paths: list[Path]) -> list[Path]:
        """The plugin files that :meth:`add_local` would import for ``paths``."""
        files: list[Path] = []
        for path in paths:
            if not path.exists():
                raise PluginError(f"plugin path {path} does not exist; give a .py file or a folder of them "
                                  f"(relative paths in a recipe's plugins: list start at the recipe's folder)")
            files += sorted(f for f in path.glob("*.py") if not f.name.startswith("_")) if path.is_dir() else [path]
        return files

    def has_local(self, file: Path) -> bool:
        """Whether ``file`` is loaded already as a local plugin."""
        info = self.infos.get(f"local:{file.stem}")
        return info is not None and info.module == str(file.resolve())

    def remove(self, name: str) -> None:
        """Unregister plugin ``name`` and every component it registered."""
        module = self.manager.get_plugin(name)
        if module is not None:
            self.manager.unregister(module)
        self._forget(name)
        self.infos.pop(name, None)

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; unknown names raise with close matches."""
        registered = self._components[kind]
        if name not in registered:
            raise UnknownComponentError(_unknown_message(kind, name, sorted(registered)))
        return registered[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def components(self, kind: str) -> list[Component]:
        return [self._components[kind][n] for n in self.names(kind)]

    def recipes(self) -> dict[str, list[str]]:
        return {n: i.recipes for n, i in sorted(self.infos.items()) if i.recipes}

    def _collect(self, plugin: str, hook_name: str, register: Callable[..., None]) -> None:
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            if impl.plugin_name == plugin:
                if trace_plugins():
                    print(f"selfsup hook: {hook_name} -> plugin {plugin}", file=sys.stderr)
                impl.function(register=register)

    def _add_component(self, kind: str, name: str, factory: Callable[..., Any], plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a component of kind {kind} with an invalid name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {kind} {name!r} with a non-callable factory")
        try:
            fields_of(kind, factory)
        except (TypeError, NameError) as error:
            raise PluginError(f"plugin {plugin!r} registered {kind} {name!r} whose parameters cannot serve as a "
                              f"recipe schema: {error}") from None
        existing = self._components[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered by both plugin {existing.plugin!r} and plugin {plugin!r}. "
                f"Uninstall one of them, or block one with SELFSUP_DISABLE_PLUGINS={plugin}"
            )
        self._components[kind][name] = Component(kind, name, factory, plugin)
        self.infos[plugin].components.setdefault(kind, []).append(name)

    def _discard(self, name: str, module: Any) -> None:
        if self.manager.is_registered(module):
            self.manager.unregister(module)
        self._forget(name)

    def _forget(self, plugin: str) -> None:
        for registered in self._components.values():
            for name in [n for n, c in registered.items() if c.plugin == plugin]:
                del registered[name]
        if plugin in self.infos:
            self.infos[plugin].components = {}
            self.infos[plugin].recipes = []


def discover(extra: dict[str, ModuleType] | None = None, only: set[str] | None = None) -> Plugins:
    """Load every ``selfsup`` entry point (minus blocked ones; only those named in ``only``
    when given) plus ``extra`` modules."""
    plugins = Plugins()
    blocked = disabled_plugins()
    own_distribution = "selfsup-toolkit"
    for entry_point in sorted(importlib.metadata.entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
        if entry_point.name in blocked or (only is not None and entry_point.name not in only):
            continue
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            module=entry_point.value,
            version=dist.version if dist else None,
            distribution=dist.metadata["Name"] if dist else None,
            builtin=bool(dist and dist.metadata["Name"] == own_distribution),
        )
        try:
            with _plugin_code():
                module = entry_point.load()
        except Exception as error:
            info.error = _describe(error)
            plugins.infos[entry_point.name] = info
            if strict_plugins():
                raise PluginError(f"plugin {entry_point.name!r} failed to import: {info.error}") from error
            continue
        plugins.add(entry_point.name, module, info)
    for name, module in (extra or {}).items():
        if name not in blocked:
            plugins.add(name, module)
    return plugins


_default: Plugins | None = None


def default_plugins() -> Plugins:
    """The process-wide plugin set, discovered on first use."""
    global _default
    if _default is None:
        _default = discover()
    return _default


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to something other than ``""``, ``0``,
    ``false`` or ``no`` (the opt-ins: ``SELFSUP_WANDB=1``, ``SELFSUP_MLFLOW=1``, ...)."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def strict_plugins() -> bool:
    return env_flag("SELFSUP_STRICT_PLUGINS")


def trace_plugins() -> bool:
    return env_flag("SELFSUP_TRACE_PLUGINS")


def disabled_plugins() -> set[str]:
    return {n.strip() for n in os.environ.get("SELFSUP_DISABLE_PLUGINS", "").split(",") if n.strip()}


def _import_file(file: Path) -> ModuleType:
    module_name = f"selfsup_local_{file.stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {file} cannot be imported; a local plugin must be a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _plugin_code():
            spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise PluginError(f"plugin file {file} failed to import: {_describe(error)}") from error
    return module


class PluginExited(Exception):
    """A plugin called ``sys.exit()`` while it was imported or registered."""


@contextlib.contextmanager
def _plugin_code() -> Iterator[None]:
    """Run a plugin's import or registration: what it prints goes to stderr (so that ``selfsup
    plugins --json`` stays JSON), and ``sys.exit()`` becomes an error of that plugin alone."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except SystemExit as exit_:
        raise PluginExited(f"the plugin called sys.exit({exit_.code!r})") from None


def _check_hook_names(plugin: str, module: Any) -> None:
    """Refuse a hook implementation whose name matches no hook (``register_objective``, say):
    pluggy would register it and never call it (its ``check_pending``, for one plugin)."""
    specs = [name for name in dir(hookspecs) if isinstance(getattr(getattr(hookspecs, name), "selfsup_spec", None),
                                                                dict)]
    for name in dir(module):
        implementation = getattr(module, name, None)
        if callable(implementation) and hasattr(implementation, f"{hookspecs.PROJECT}_impl") and name not in specs:
            close = difflib.get_close_matches(name, specs, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f". Hooks: {', '.join(sorted(specs))}"
            raise UnknownHook(f"plugin {plugin!r} implements {name!r}, which is not a selfsup hook{hint}")


class UnknownHook(Exception):
    """A plugin implements a hook that does not exist (a misspelling): recorded as its load error."""


def _describe(error: BaseException) -> str:
    if isinstance(error, SyntaxError) and error.filename:
        return f"SyntaxError: {error.msg} ({error.filename}:{error.lineno})"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<frozen")]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _unknown_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    listing = ", ".join(known) or "none"
    return f"no {kind} named {name!r}.{hint} Registered {kind}s: {listing}. (`selfsup plugins` lists them)"
