"""The plugin manager: built-ins first, then third-party entry points of group "hw3", one at a time.

Every hook is called through pluggy (so `tryfirst`, `trylast`, `wrapper=True` and `firstresult`
mean what pluggy documents; `hookspecs.py` says the order). What pluggy registers for a plugin is
a thin stand-in whose hook functions call the plugin's own and say which plugin is running, so an
error is pinned on the plugin whose function raised it, and on its package: an import that
fails, a misspelt hook, a duplicate name or a register hook that raises is shown by `hw3 plugins`
and never stops the rest from working.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

import runner.hookspecs as hookspecs
from runner.errors import Hw3Error, choices_hint, did_you_mean
from runner.hookspecs import PLUGIN_API_VERSION
from runner.version import __version__

if TYPE_CHECKING:
    from runner.context import RunContext
    from runner.datasets import DatasetSpec, DatasetTables
    from runner.method import Method

ENTRY_POINT_GROUP = "hw3"
BUILTIN_PACKAGE = "hw3"
HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("hw3_"))


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as `hw3 plugins` lists it."""

    name: str
    package: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    api: str = ""  # the plugin API version the plugin says it needs (its HW3_API), if it says


@dataclass(frozen=True)
class Registered:
    """A method class or dataset spec and the plugin that brought it."""

    obj: Any
    plugin: str
    package: str


class PluginManager:
    """A typed face over pluggy: one method per hook, errors attributed to plugins."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("hw3")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.skipped: list[str] = []  # third-party plugins HW3_LOAD_PLUGINS left out, as "name (package)"
        self.unmatched: list[str] = []  # HW3_LOAD_PLUGINS entries that name no installed plugin
        self._methods: dict[str, Registered] | None = None
        self._datasets: dict[str, Registered] | None = None
        self._validators: dict[str, Registered] | None = None

    # -- loading -----------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        wanted = _load_filter()
        builtins, third = [], []
        seen: set[tuple[str, str]] = set()
        matched: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if (ep.name, ep.value) in seen:  # editable installs can list a dist twice
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            package = dist.name if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            if _norm(package) == BUILTIN_PACKAGE:
                builtins.append((ep, package, version))
            elif wanted is None or ep.name in wanted or _norm(package) in wanted:
                third.append((ep, package, version))
                matched |= {ep.name, _norm(package)}
            else:
                self.skipped.append(f"{ep.name} ({package})")
        if wanted:
            self.unmatched = sorted(w for w in wanted if w not in matched and _norm(w) not in matched)
        if not builtins:  # hw3 itself is not installed (run from a bare source tree): say so, once
            self._record(
                PluginInfo(
                    BUILTIN_PACKAGE,
                    BUILTIN_PACKAGE,
                    __version__,
                    True,
                    errors=["no built-in plugins: hw3's entry points are missing; install it with pip install -e ."],
                )
            )
        for ep, package, version in builtins:
            self._load(ep.name, package, version, True, ep.load)
        for ep, package, version in sorted(third, key=lambda t: (_norm(t[1]), t[0].name)):
            self._load(ep.name, package, version, False, ep.load)

    def _load(self, name: str, package: str, version: str, builtin: bool, load: Callable[[], Any]) -> None:
        try:
            plugin = load()
        except Exception as exc:  # a broken plugin must not take the rest down
            self._record(PluginInfo(name, package, version, builtin, errors=[f"import failed: {_exc_line(exc)}"]))
            return
        self.register(plugin, name=name, package=package, version=version, builtin=builtin)

    def register(
        self,
        plugin: Any,
        name: str,
        package: str = "in-process",
        version: str = "",
        builtin: bool = False,
    ) -> PluginInfo:
        """Register a plugin object or module; errors are recorded on its `PluginInfo`."""
        info = PluginInfo(name, package, version, builtin)
        wanted = getattr(plugin, "HW3_API", None)
        if wanted is not None:
            info.api = str(wanted)
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("hw3_") and attr not in HOOK_NAMES and callable(getattr(plugin, attr))
        ]
        if name in self.infos and not self.infos[name].errors:
            info.errors.append(f"a plugin named '{name}' is already loaded from {self.infos[name].package}")
        elif wanted is not None and (problem := api_problem(wanted)):
            info.errors.append(problem)
        elif unknown:
            info.errors += [
                f"unknown hook '{u}'{did_you_mean(u, HOOK_NAMES)}; hooks are: {', '.join(HOOK_NAMES)}" for u in unknown
            ]
        else:
            stand_in = _Attributed(plugin, name, self)
            try:
                self.pm.register(stand_in, name=name)
            except Exception as exc:  # pluggy rejects a hook whose arguments don't match its spec
                info.errors.append(f"rejected by pluggy: {_exc_line(exc)}")
            else:
                info.hooks = sorted(h.name for h in self.pm.get_hookcallers(stand_in) or [])
        self._record(info)
        self._methods = self._datasets = self._validators = None
        return info

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)
        self._methods = self._datasets = self._validators = None

    def _record(self, info: PluginInfo) -> None:
        self.infos[info.name] = info
        if info.errors and os.environ.get("HW3_STRICT_PLUGINS") == "1":
            raise StrictPluginError(f"plugin '{info.name}' ({info.package}): {info.errors[0]} [HW3_STRICT_PLUGINS=1]")

    def package_of(self, plugin: str) -> str:
        info = self.infos.get(plugin)
        return info.package if info else "?"

    def _error(self, plugin: str, message: str) -> None:
        info = self.infos.setdefault(plugin, PluginInfo(plugin, "?", "", False))
        if message not in info.errors:
            info.errors.append(message)
        if os.environ.get("HW3_STRICT_PLUGINS") == "1":
            raise StrictPluginError(f"plugin '{plugin}' ({info.package}): {message} [HW3_STRICT_PLUGINS=1]")

    # -- calling hooks through pluggy --------------------------------------------------------
    def _call_sparing(self, hook: str, undo: Callable[[], None], **kwargs: Any) -> Any:
        """Call `hook` through pluggy; when one plugin raises, record the error on it, `undo` what
        the call did so far, and call again without that plugin, until a call goes through."""
        skip: list[Any] = []
        while True:
            caller = self.pm.subset_hook_caller(hook, skip) if skip else getattr(self.pm.hook, hook)
            try:
                return caller(**kwargs)
            except StrictPluginError:
                raise
            except Exception as exc:
                undo()
                name = _culprit(exc)
                if name is None:
                    raise Hw3Error(f"calling {hook} failed and no plugin could be named: {_exc_line(exc)}") from None
                self._error(name, f"{hook} raised {_exc_line(exc)}")
                skip.append(self.pm.get_plugin(name))

    # -- registration hooks ------------------------------------------------------------------
    def _collect(self, hook: str, kind: str, check: Callable[[Any], str], **kwargs: Any) -> dict[str, Registered]:
        offers: list[tuple[Any, str]] = []

        def register(obj: Any) -> None:
            plugin = _running.get() or "?"
            problem = check(obj)
            if problem:
                self._error(plugin, problem)
            else:
                offers.append((obj, plugin))

        self._call_sparing(hook, offers.clear, register=register, **kwargs)
        # Unique names whatever order pluggy called the plugins in: the first loaded keeps one.
        order = {name: i for i, name in enumerate(self.infos)}
        found: dict[str, Registered] = {}
        for obj, plugin in sorted(offers, key=lambda o: order.get(o[1], len(order))):
            if obj.name in found:
                other = found[obj.name]
                self._error(
                    plugin,
                    f"{kind} '{obj.name}' is already registered by {other.package} "
                    f"(plugin '{other.plugin}'); uninstall one of them or rename this one",
                )
                continue
            found[obj.name] = Registered(obj, plugin, self.package_of(plugin))
        return found

    def methods(self) -> dict[str, Registered]:
        if self._methods is None:
            from runner.method import check_method_class

            self._methods = self._collect("hw3_register_methods", "method", check_method_class)
        return self._methods

    def datasets(self) -> dict[str, Registered]:
        if self._datasets is None:
            from runner.datasets import check_dataset_spec

            self._datasets = self._collect(
                "hw3_register_datasets", "dataset", check_dataset_spec, registry=_dataset_tables()
            )
        return self._datasets

    def validators(self) -> dict[str, Registered]:
        if self._validators is None:
            from runner.validator import check_validator

            self._validators = self._collect("hw3_register_validators", "validator", check_validator)
        return self._validators

    def validator(self, name: str, flag: str = "validator") -> Any:
        validators = self.validators()
        if name not in validators:
            raise Hw3Error(
                f"{flag}: unknown validator '{name}'{choices_hint(name, list(validators))}{self._why_missing()}"
            )
        return validators[name].obj

    def method(self, name: str) -> type[Method[Any]]:
        methods = self.methods()
        if name not in methods:
            raise Hw3Error(f"unknown method '{name}'{choices_hint(name, list(methods))}{self._why_missing()}")
        return methods[name].obj

    def _why_missing(self) -> str:
        """What a user asking for a name that is not there may not know: plugins left out by
        HW3_LOAD_PLUGINS, and plugins that failed to load."""
        notes = []
        if self.skipped:
            notes.append(
                f"HW3_LOAD_PLUGINS={os.environ.get('HW3_LOAD_PLUGINS', '')!r} left out {', '.join(self.skipped)}"
            )
        broken = [f"{i.name} ({i.package})" for i in self.infos.values() if i.errors]
        if broken:
            notes.append(f"not loaded because of errors: {', '.join(broken)} (hw3 plugins says why)")
        return "; " + "; ".join(notes) if notes else ""

    def dataset(self, name: str) -> DatasetSpec:
        datasets = self.datasets()
        if name in datasets:
            return datasets[name].obj
        answers: list[str] = []
        token = _answers.set(answers)
        try:
            spec = self._call_sparing("hw3_resolve_dataset", answers.clear, name=name)
        finally:
            _answers.reset(token)
        if spec is None:
            raise Hw3Error(f"unknown dataset '{name}'{choices_hint(name, list(datasets))}{self._why_missing()}")
        plugin = answers[-1] if answers else "?"  # firstresult: the last to answer is the one that won
        datasets[name] = Registered(spec, plugin, self.package_of(plugin))
        return spec

    def add_commands(self, app: Any) -> None:
        saved = (list(app.registered_commands), list(app.registered_groups))

        def undo() -> None:
            app.registered_commands[:], app.registered_groups[:] = saved

        self._call_sparing("hw3_register_commands", undo, app=app)

    # -- lifecycle hooks: an exception here stops the run and names the plugin ---------------
    def run_start(self, run: RunContext) -> None:
        self._call_lifecycle("hw3_run_start", run=run)

    def epoch_end(self, run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
        self._call_lifecycle("hw3_epoch_end", run=run, epoch=epoch, metrics=metrics)

    def run_end(self, run: RunContext, status: str, metrics: dict[str, float]) -> None:
        self._call_lifecycle("hw3_run_end", run=run, status=status, metrics=metrics)

    def _call_lifecycle(self, hook: str, **kwargs: Any) -> None:
        try:
            getattr(self.pm.hook, hook)(**kwargs)
        except (KeyboardInterrupt, Hw3Error):
            raise
        except Exception as exc:
            name = _culprit(exc) or "?"
            raise PluginHookError(
                f"plugin '{name}' ({self.package_of(name)}) raised in {hook}: {_exc_line(exc)}",
                traceback.format_exc(),
            ) from exc

    def problems(self) -> list[str]:
        """One line per plugin error, for warnings on stderr."""
        self.methods(), self.datasets(), self.validators()
        lines = [f"plugin '{i.name}' ({i.package}): {e}" for i in self.infos.values() for e in i.errors]
        lines += [f"HW3_LOAD_PLUGINS names '{w}', which is no installed plugin or package" for w in self.unmatched]
        return lines


def api_problem(wanted: Any) -> str:
    """Why a plugin declaring `HW3_API = wanted` cannot load into this hw3, or '' when it can.

    The API version is one number, bumped only for incompatible changes, so a plugin loads
    when its number equals ours. Features added within a version are asked for with a
    dependency on a hw3 release instead (`dependencies = ["hw3>=0.2"]`).
    """
    text = str(wanted).strip()
    if isinstance(wanted, bool) or not text.isdigit():
        return f'HW3_API = {wanted!r} is not a plugin API version; write a whole number such as "{PLUGIN_API_VERSION}"'
    if int(text) != int(PLUGIN_API_VERSION):
        newer = int(text) > int(PLUGIN_API_VERSION)
        fix = "upgrade hw3" if newer else "install a release of the plugin made for this hw3"
        return f"needs plugin API {text}, but hw3 {__version__} provides plugin API {PLUGIN_API_VERSION}; {fix}"
    return ""


class StrictPluginError(Hw3Error):
    """A plugin problem made fatal by HW3_STRICT_PLUGINS=1."""


_running: ContextVar[str | None] = ContextVar("hw3_running_plugin", default=None)
_answers: ContextVar[list[str] | None] = ContextVar("hw3_answers", default=None)  # who returned a value


class _Attributed:
    """What pluggy registers for a plugin: each of its hook functions, wrapped to mark which plugin
    is running (for `register` callbacks) and which one raised (on the exception, innermost
    first), and, for `hw3_resolve_dataset`, who answered. pluggy reads the wrapped function's
    options and arguments through `functools.wraps`, so it orders and calls them as it would the
    plugin's own."""

    def __init__(self, plugin: Any, name: str, manager: PluginManager) -> None:
        self.plugin, self.name = plugin, name
        for attr in dir(plugin):
            if attr in HOOK_NAMES and callable(fn := getattr(plugin, attr)):
                setattr(self, attr, _attributed(fn, name))


def _attributed(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(fn):  # a wrapper: delegate, and mark what it raises itself

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from fn(*args, **kwargs))
            except BaseException as exc:
                _mark(exc, name)
                raise

        return wrapper

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        token = _running.set(name)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _mark(exc, name)
            raise
        finally:
            _running.reset(token)
        if result is not None and (answers := _answers.get()) is not None:
            answers.append(name)
        return result

    return call


def _mark(exc: BaseException, name: str) -> None:
    """Pin `exc` on plugin `name`, unless an implementation it passed through already did."""
    if getattr(exc, "hw3_plugin", None) is None:
        with contextlib.suppress(AttributeError, TypeError):
            exc.hw3_plugin = name  # type: ignore[attr-defined]


def _culprit(exc: BaseException) -> str | None:
    return getattr(exc, "hw3_plugin", None)


class PluginHookError(Hw3Error):
    def __init__(self, message: str, tb: str) -> None:
        super().__init__(message)
        self.traceback = tb


def _exc_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _dataset_tables() -> DatasetTables:
    """registry.toml's dataset tables for the dataset plugins; none when the file does not parse
    (the command's own reading of it says why, once)."""
    from runner.config import load_registry
    from runner.datasets import DatasetTables
    from runner.errors import ConfigError

    try:
        registry = load_registry()
    except ConfigError:
        return DatasetTables({})
    return DatasetTables(registry.datasets, registry.path)


def builtin_names() -> set[str]:
    """The entry-point names hw3's own distribution registers (its built-in plugins)."""
    return {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if _dist_name(ep) == BUILTIN_PACKAGE}


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return _norm(dist.name) if dist is not None else "?"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _load_filter() -> set[str] | None:
    """HW3_LOAD_PLUGINS="a,b" loads only those third-party plugins; "" loads none."""
    raw = os.environ.get("HW3_LOAD_PLUGINS")
    if raw is None:
        return None
    return {_norm(p.strip()) for p in raw.split(",") if p.strip()} | {p.strip() for p in raw.split(",")}


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide manager, loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
        _manager.load_entry_points()
    return _manager


def reset_manager() -> None:
    global _manager
    _manager = None


@contextmanager
def registered(plugin: Any, name: str = "test-plugin") -> Iterator[PluginInfo]:
    """Register `plugin` on the process-wide manager for the length of a `with` block."""
    manager = get_manager()
    info = manager.register(plugin, name=name)
    try:
        yield info
    finally:
        manager.unregister(name)


def warn_problems(manager: PluginManager | None = None) -> None:
    for line in (manager or get_manager()).problems():
        print(f"warning: {line}", file=sys.stderr)
