"""Resolved config: registry.toml, the plugin's typed defaults and --set overrides, in one place.

Precedence, lowest first: the dataclass defaults (RunSettings and the method's Config),
`[defaults]`, `[datasets.X]` of each dataset used, `[pairs."S:T"]`, `[methods.M]`, a preset,
then `--set` (and the CLI's shorthands such as --epochs). Every layer is checked against the
known keys and their types before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from runner.errors import ConfigError
from runner.method import option
from runner.plugins import choices_hint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class RunSettings:
    """Settings every run has, whatever its method."""

    epochs: int = option(10, "passes over the largest training split")
    batch_size: int = option(64, "images drawn from each domain per training step")
    seed: int = option(0, "seeds weights, shuffling and sampling; same seed, same metrics on the CPU")
    device: str = option("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "autocast dtype on CUDA; fp16 adds a gradient scaler (the CPU always uses fp32)"
    )
    channels_last: bool = option(False, "channels-last memory format on CUDA (faster convolutions)")
    compile: bool = option(False, "torch.compile each network (for GPUs; the first steps are slow while it compiles)")
    image_size: int = option(0, "side both domains are resized to; 0 keeps the first dataset's size")
    channels: int = option(0, "channels both domains are converted to (1 or 3); 0 takes the largest")
    train_subset: int = option(0, "train on only this many images per domain (0: all); quick checks")
    test_subset: int = option(0, "evaluate on only this many test images per domain (0: all)")
    eval_batch_size: int = option(1000, "batch size for evaluation")
    log_every: int = option(20, "log step-level training metrics every N steps")
    checkpoint_dir: str = option("checkpoints", "folder for checkpoints, one subfolder per run ID")
    tsne_points: int = option(2000, "source + target test points in an adaptation run's t-SNE plots (0: none)")


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


@dataclass
class ResolvedConfig:
    """The config a run uses, with where each value came from."""

    method: str
    settings: RunSettings
    method_config: Any
    source: str | None = None  # adaptation: the pair's datasets
    target: str | None = None
    dataset: str | None = None  # generation: the one dataset
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def pair(self) -> str | None:
        return f"{self.source}:{self.target}" if self.source else None

    def flat(self) -> dict[str, Any]:
        """Every key and value, as logged to MLflow params."""
        return {**dataclasses.asdict(self.settings), **dataclasses.asdict(self.method_config)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "source": self.source,
            "target": self.target,
            "dataset": self.dataset,
            "config": self.flat(),
            "origins": self.origins,
        }


def config_fields(method_cls: type) -> dict[str, tuple[Any, dataclasses.Field[Any], str]]:
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
    method_cls: type,
    registry: Registry,
    *,
    source: str | None = None,
    target: str | None = None,
    dataset: str | None = None,
    preset: str | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    dataset_options: dict[str, set[str]] | None = None,
) -> ResolvedConfig:
    """The run's config; `dataset_options` names, per dataset, the `[datasets.X]` keys that are
    the dataset's own settings (such as a folder path) rather than config keys."""
    fields = config_fields(method_cls)
    values = {k: _default(f) for k, (_, f, _) in fields.items()}
    origins = dict.fromkeys(values, "default")
    name = method_cls.name

    layers: list[tuple[str, dict[str, Any]]] = [(f"{registry.path.name} [defaults]", registry.defaults)]
    for ds in (source, target, dataset):
        if ds and ds in registry.datasets:
            own = (dataset_options or {}).get(ds, set())
            table = {k: v for k, v in registry.datasets[ds].items() if k not in own}
            layers.append((f"{registry.path.name} [datasets.{ds}]", table))
    if source and f"{source}:{target}" in registry.pairs:
        table = {k: v for k, v in registry.pairs[f"{source}:{target}"].items() if k not in ("description",)}
        layers.append((f'{registry.path.name} [pairs."{source}:{target}"]', table))
    if name in registry.methods:
        layers.append((f"{registry.path.name} [methods.{name}]", registry.methods[name]))
    if preset:
        if preset not in registry.presets:
            raise ConfigError(f"unknown preset '{preset}'{choices_hint(preset, list(registry.presets))}")
        table = {k: v for k, v in registry.presets[preset].items() if k != "description"}
        layers.append((f"preset '{preset}'", table))
    layers.append(("--set", dict(overrides or [])))

    for where, table in layers:
        for key, raw in table.items():
            if key not in fields:
                raise ConfigError(
                    f"{where}: unknown config key '{key}' for method '{name}'{choices_hint(key, list(fields))}"
                )
            values[key] = coerce(raw, fields[key][0], f"{where}: {key}")
            origins[key] = where

    run_values = {k: v for k, v in values.items() if fields[k][2] == "run"}
    method_values = {k: v for k, v in values.items() if fields[k][2] == "method"}
    settings = RunSettings(**run_values)
    _check_ranges(settings)
    return ResolvedConfig(
        method=name,
        settings=settings,
        method_config=method_cls.Config(**method_values),
        source=source,
        target=target,
        dataset=dataset,
        origins=origins,
    )


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ConfigError(f"config field '{f.name}' has no default; give it one in its dataclass")


def _check_ranges(s: RunSettings) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "log_every"):
        if getattr(s, key) < 1:
            raise ConfigError(f"{key}={getattr(s, key)}: must be at least 1")
    if s.channels not in (0, 1, 3):
        raise ConfigError(f"channels={s.channels}: use 1, 3, or 0 to take the largest of the pair")


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce(value: Any, typ: Any, where: str) -> Any:
    """`value` (a TOML value or a --set string) as `typ`, or a ConfigError naming `where`."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        choices = typing.get_args(typ)
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
