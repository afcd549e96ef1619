"""Resolved config: registry.toml, the plugin's typed defaults and --set overrides, in one place.

Precedence, lowest first: the dataclass defaults (RunSettings and the method's Config),
`[defaults]`, each dataset's `run_defaults` and `[datasets.X]`, `[pairs."S:T"]`, the method's
`run_defaults`, `[methods.M]`,
`[pairs."S:T".methods.M]` (one method on one pair, such as its epochs on a slow pair), a preset
(its flat keys, then its `[presets.P.methods.M]`), then `--set` (and the CLI's shorthands such as
--epochs). Every layer is checked against the known keys and their types before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from runner.errors import ConfigError, choices_hint
from runner.settings import RunSettings, check_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class Registry:
    """registry.toml, parsed and checked for shape."""

    path: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)  # `hw3 reproduce SUITE`
    default_pair: str = "mnist:mnistm"
    default_dataset: str = "mnist"


def registry_path() -> Path:
    """The packaged registry.toml (inside the wheel), or the repository's in a source checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "registry.toml"
    return packaged if packaged.exists() else here.parent / "registry.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: registry file not found; check the path (or reinstall hw3)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file") from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_registry(path: Path | None = None) -> Registry:
    """The packaged registry.toml, with the file named by HW3_REGISTRY (if any) merged over it."""
    path = path or registry_path()
    raw = _read_toml(path)
    if path == registry_path() and os.environ.get("HW3_REGISTRY"):
        # A user's own settings, pairs, presets and folder datasets, without editing the package.
        user = Path(os.environ["HW3_REGISTRY"]).expanduser()
        raw, path = _merge(raw, _read_toml(user)), user
    tables = {"defaults", "methods", "datasets", "pairs", "presets", "suites"}
    scalars = {"default_pair", "default_dataset"}
    for key in raw:
        if key not in tables | scalars:
            raise ConfigError(f"{path}: unknown top-level key '{key}'{choices_hint(key, sorted(tables | scalars))}")
    reg = Registry(path=path, **{k: raw[k] for k in tables | scalars if k in raw})
    for name in reg.pairs:
        if name.count(":") != 1:
            raise ConfigError(f"{path}: pair '{name}' must be written SOURCE:TARGET")
    return reg


@dataclass(frozen=True)
class Task:
    """What a run learns from: a SOURCE:TARGET pair (adaptation) or one dataset (generation).

    Built once when a run is planned; everything downstream asks it rather than branching on
    which of the two it is."""

    source: str | None = None
    target: str | None = None
    dataset: str | None = None

    @classmethod
    def pair_of(cls, source: str, target: str) -> Task:
        return cls(source=source, target=target)

    @classmethod
    def single(cls, dataset: str) -> Task:
        return cls(dataset=dataset)

    @property
    def is_pair(self) -> bool:
        return self.source is not None

    @property
    def pair(self) -> str | None:
        return f"{self.source}:{self.target}" if self.is_pair else None

    @property
    def label(self) -> str:
        """`mnist:mnistm` or `mnist`: how a user writes it."""
        return self.pair or self.dataset or ""

    @property
    def slug(self) -> str:
        """`mnist-mnistm` or `mnist`: for run, experiment and file names."""
        return self.label.replace(":", "-")

    @property
    def roles(self) -> dict[str, str]:
        """Role -> dataset name: {"source": S, "target": T}, or {"data": D}."""
        if self.is_pair:
            return {"source": self.source or "", "target": self.target or ""}
        return {"data": self.dataset} if self.dataset else {}

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.roles.values()))

    def tags(self) -> dict[str, str]:
        """`pair` or `dataset`, as runs are tagged and logged (colons stay out of metric names)."""
        return {"pair": self.label} if self.is_pair else {"dataset": self.label}


@dataclass
class ResolvedConfig:
    """The config a run uses, with where each value came from."""

    method: str
    settings: RunSettings
    method_config: Any
    task: Task = field(default_factory=Task)
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def pair(self) -> str | None:
        return self.task.pair

    def flat(self) -> dict[str, Any]:
        """Every key and value, as logged to MLflow params."""
        return {**dataclasses.asdict(self.settings), **dataclasses.asdict(self.method_config)}

    def to_dict(self) -> dict[str, Any]:
        t = self.task
        return {
            "method": self.method,
            "source": t.source,
            "target": t.target,
            "dataset": t.dataset,
            "config": self.flat(),
            "origins": self.origins,
        }


@dataclass(frozen=True)
class SavedConfig:
    """A `ResolvedConfig.to_dict()` read back (from a checkpoint or a run's config.json): what
    resolving it again needs."""

    method: str
    task: Task
    values: dict[str, Any]  # every key and value, as `ResolvedConfig.flat()`

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> SavedConfig:
        task = Task(saved.get("source"), saved.get("target"), saved.get("dataset"))
        return cls(str(saved.get("method", "")), task, dict(saved.get("config", {})))


def config_fields(method_cls: type[Any]) -> dict[str, tuple[Any, dataclasses.Field[Any], str]]:
    """key -> (type, field, section) for the run settings and the method's Config."""
    out: dict[str, tuple[Any, dataclasses.Field[Any], str]] = {}
    for section, cls in (("run", RunSettings), ("method", method_cls.Config)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f.name] = (hints[f.name], f, section)
    return out


def parse_set(items: list[str]) -> list[tuple[str, str]]:
    """`--set key=value` items, split; a malformed one is an error naming it."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write key=value, such as --set lr=0.001")
        pairs.append((key.strip(), value.strip()))
    return pairs


def resolve(
    method_cls: type[Any],  # a runner.Method subclass (typed loosely: method.py's types import this module)
    registry: Registry,
    task: Task | None = None,
    *,
    preset: str | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    dataset_options: dict[str, set[str]] | None = None,
    dataset_defaults: dict[str, dict[str, Any]] | None = None,
) -> ResolvedConfig:
    """The run's config; `dataset_options` names, per dataset, the `[datasets.X]` keys that are
    the dataset's own settings (such as a folder path) rather than config keys."""
    task = task or Task()
    fields = config_fields(method_cls)
    values = {k: _default(f) for k, (_, f, _) in fields.items()}
    origins = dict.fromkeys(values, "default")
    name = method_cls.name

    layers = _layers(
        name, dict(method_cls.run_defaults or {}), registry, task, preset, dataset_options or {}, dataset_defaults or {}
    )
    layers.append(("--set", dict(overrides or [])))

    for where, table in layers:
        for key, raw in table.items():
            if key not in fields:
                raise ConfigError(
                    f"{where}: unknown config key '{key}' for method '{name}'{choices_hint(key, list(fields))}"
                )
            values[key] = coerce(raw, fields[key][0], f"{where}: {key}")
            origins[key] = where

    for key, value in values.items():
        _check(fields[key][1], value, origins[key])
    run_values = {k: v for k, v in values.items() if fields[k][2] == "run"}
    method_values = {k: v for k, v in values.items() if fields[k][2] == "method"}
    settings, config = RunSettings(**run_values), method_cls.Config(**method_values)
    method_cls.check_config(config, settings)
    return ResolvedConfig(method=name, settings=settings, method_config=config, task=task, origins=origins)


def _layers(
    name: str,
    method_run_defaults: dict[str, Any],
    registry: Registry,
    task: Task,
    preset: str | None,
    dataset_options: dict[str, set[str]],
    dataset_defaults: dict[str, dict[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """The tables that set a run's config, each named as a message would, later ones winning:
    registry defaults, each dataset's, the pair's, the method's, the pair's for the method, the
    preset's (and its per-method table); `--set` goes on top of these."""
    layers: list[tuple[str, dict[str, Any]]] = [(f"{registry.path.name} [defaults]", registry.defaults)]
    for ds in task.datasets:
        if own_defaults := dataset_defaults.get(ds):
            layers.append((f"dataset {ds}'s defaults", dict(own_defaults)))
        if ds in registry.datasets:
            own = dataset_options.get(ds, set())
            table = {k: v for k, v in registry.datasets[ds].items() if k not in own}
            layers.append((f"{registry.path.name} [datasets.{ds}]", table))
    if task.pair in registry.pairs:
        table = {k: v for k, v in registry.pairs[task.pair].items() if k not in ("description", "methods")}
        layers.append((f'{registry.path.name} [pairs."{task.pair}"]', table))
    if method_run_defaults:
        layers.append((f"method {name}'s defaults", dict(method_run_defaults)))
    if name in registry.methods:
        layers.append((f"{registry.path.name} [methods.{name}]", registry.methods[name]))
    if task.pair in registry.pairs and name in registry.pairs[task.pair].get("methods", {}):
        table = registry.pairs[task.pair]["methods"][name]
        layers.append((f'{registry.path.name} [pairs."{task.pair}".methods.{name}]', table))
    if preset:
        if preset not in registry.presets:
            raise ConfigError(f"unknown preset '{preset}'{choices_hint(preset, list(registry.presets))}")
        table = dict(registry.presets[preset])
        per_method = table.pop("methods", {})
        table.pop("description", None)
        layers.append((f"preset '{preset}'", table))
        if name in per_method:  # [presets.P.methods.M]: what the preset means for this method
            layers.append((f"preset '{preset}' [methods.{name}]", per_method[name]))
    return layers


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ConfigError(f"config field '{f.name}' has no default; give it one in its dataclass")


def _check(f: dataclasses.Field[Any], value: Any, origin: str) -> None:
    """A value's range, as its `option()` declares it; the message names where it was set."""
    try:
        check_value(f, value, f.name)
        if f.name == "channels" and value not in (0, 1, 3):
            raise ConfigError(f"channels={value}: use 1, 3, or 0 to take the largest of the pair")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (set by {origin})" if origin != "default" else str(exc)) from None


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce(value: Any, typ: Any, where: str) -> Any:
    """`value` (a TOML value or a --set string) as `typ`, or a ConfigError naming `where`."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        choices = typing.get_args(typ)
        if isinstance(value, (bool, str)) and str(value).lower() in choices:  # TOML `channels_last = true`
            return str(value).lower()
        if value in choices:
            return value
        raise ConfigError(f"{where}={value!r}: must be one of {', '.join(map(str, choices))}")
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value in (None, "none", "None", ""):
            return None
        return coerce(value, args[0], where)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{where}={value!r}: expected true or false")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}={value!r}: expected an integer")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}={value!r}: expected a number, such as 0.001 or 1e-3")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}={value!r}: expected a string")
    return value


def type_name(typ: Any) -> str:
    if typing.get_origin(typ) is Literal:
        return " | ".join(map(str, typing.get_args(typ)))
    return getattr(typ, "__name__", str(typ))
