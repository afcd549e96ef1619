"""Rich tables for `hw3 list`, `hw3 plugins` and `hw3 show`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from runner.config import Registry, ResolvedConfig, config_fields, type_name
from runner.hookspecs import PLUGIN_API_VERSION
from runner.runs.plugins import PluginManager
from runner.version import __version__

if TYPE_CHECKING:
    from runner.method import Method

KEY_COLUMNS = {"name", "key", "preset"}  # never truncated: they are what a user types


def methods_table(manager: PluginManager) -> Table:
    t = Table(title="methods", title_justify="left")
    for col in ("name", "kind", "package", "description"):
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    for name, reg in sorted(manager.methods().items()):
        t.add_row(f"[bold]{name}", reg.obj.kind, reg.package, reg.obj.description)
    return t


def validators_table(manager: PluginManager) -> Table:
    t = Table(title="validators (hw3 tune --select NAME, hw3 report --protocol NAME)", title_justify="left")
    from runner.validator import is_study_level

    for col in ("name", "target labels", "scores", "package", "description", "from"):
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    for name, reg in manager.validators().items():
        v = reg.obj
        labels = "[yellow]yes: an oracle" if v.uses_target_labels else "no"
        scores = "candidates together" if is_study_level(v) else "each epoch"
        t.add_row(f"[bold]{name}", labels, scores, reg.package, v.description, v.citation)
    return t


def datasets_table(manager: PluginManager, data_root: str | None = None, cache: bool = False) -> Table:
    from runner.commands.data import cached, context_for

    t = Table(title="datasets", title_justify="left")
    for col in ("name", "domain", "classes", "channels", "size", "available", "source", "package"):
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    if cache:
        t.add_column("cached")
    for name, reg in sorted(manager.datasets().items()):
        spec = reg.obj
        try:
            ctx = context_for(spec, data_root)
            offline = "yes" if spec.offline(ctx) else "[yellow]needs files"
            origin = spec.origin(ctx)
        except Exception as exc:  # a listing must survive one broken dataset
            offline, origin = "[red]error", str(exc)
        row = [f"[bold]{name}", spec.domain, str(len(spec.classes)), str(spec.channels), f"{spec.size}x{spec.size}"]
        row += [offline, origin, reg.package]
        if cache:
            row.append("yes" if cached(spec, data_root) else "")
        t.add_row(*row)
    return t


def pairs_table(registry: Registry) -> Table:
    t = Table(title="named pairs (--pair SOURCE:TARGET)", title_justify="left")
    t.add_column("pair", no_wrap=True)
    t.add_column("description")
    for name, table in registry.pairs.items():
        default = " [dim](default)" if name == registry.default_pair else ""
        t.add_row(f"[bold]{name}{default}", table.get("description", ""))
    return t


def presets_table(registry: Registry) -> Table:
    t = Table(title="presets (--preset NAME)", title_justify="left")
    for col in ("preset", "description", "settings"):
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    for name, table in registry.presets.items():
        settings = ", ".join(f"{k}={v}" for k, v in table.items() if k not in ("description", "methods"))
        per_method = ", ".join(sorted(table.get("methods", {})))
        if per_method:
            settings = (settings + "; " if settings else "") + f"per method: {per_method} (hw3 show M --preset {name})"
        t.add_row(f"[bold]{name}", table.get("description", ""), settings)
    return t


def suites_table(registry: Registry) -> Table:
    t = Table(title="suites (hw3 reproduce SUITE)", title_justify="left")
    for col in ("suite", "description", "runs"):
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    for name, table in registry.suites.items():
        t.add_row(f"[bold]{name}", table.get("description", ""), str(len(table.get("runs", []))))
    return t


def plugins_table(manager: PluginManager) -> Table:
    manager.methods(), manager.datasets(), manager.validators()  # collect registration errors too
    t = Table(title=f"plugins (hw3 {__version__}, plugin API {PLUGIN_API_VERSION})", title_justify="left")
    for col in ("name", "package", "version", "api", "hooks", "error"):
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    for info in manager.infos.values():
        pkg = info.package + (" [dim](built-in)" if info.builtin else "")
        hooks, errors = "\n".join(info.hooks), "[red]" + "\n".join(info.errors)
        t.add_row(info.name, pkg, info.version, info.api, hooks, errors)
    return t


def config_table(
    method_cls: type[Method[Any]], resolved: ResolvedConfig, without: ResolvedConfig | None = None
) -> Table:
    """Every config key with its value and origin; given `without` (the config without a preset or
    --set), a column shows what each value would otherwise be, where it differs."""
    t = Table(title=f"{method_cls.name}: config keys (--set KEY=VALUE)", title_justify="left")
    columns = ("key", "type", "value", "from", *(("instead of",) if without else ()), "help")
    for col in columns:
        t.add_column(col, no_wrap=col in KEY_COLUMNS)
    values = resolved.flat()
    others = without.flat() if without else {}
    for key, (typ, field, section) in config_fields(method_cls).items():
        style = "bold" if section == "method" else ""
        row = [f"[{style}]{key}" if style else key, type_name(typ), repr(values[key]), resolved.origins.get(key, "")]
        if without:
            row.append(repr(others[key]) if others[key] != values[key] else "")
        t.add_row(*row, field.metadata.get("help", ""))
    return t
