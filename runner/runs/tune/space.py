"""A search space as `hw3 tune --space` writes it: `KEY=LOW..HIGH` (uniform), `KEY=LOW..HIGH:log`
(log-uniform) or `KEY=A,B,C` (a choice), each checked against the method's config before the
first trial, as `--set` is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.config import coerce, config_fields
from runner.errors import ConfigError, choices_hint

if TYPE_CHECKING:
    import optuna

    from runner.method import Method

EXAMPLE = "--space lr=1e-4..1e-2:log, --space dropout=0..0.7 or --space optimizer=adam,sgd"


@dataclass(frozen=True)
class Dimension:
    """One key of the space: a range of numbers (`low`, `high`, `log`, whole numbers when the key
    is an int) or a choice among values (`choices`, as written)."""

    key: str
    text: str  # as the user wrote it, after KEY=
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[str, ...] = ()

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def suggest(self, trial: optuna.Trial) -> Any:
        if not self.is_range:
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether a config value (the defaults', say) lies in this dimension."""
        if not self.is_range:
            return self.choice_for(value) is not None
        assert self.low is not None and self.high is not None
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def choice_for(self, value: Any) -> str | None:
        """The choice, as written, that a config value equals (`True` is `true`, `0.5` is `.5`), or None."""
        return next((c for c in self.choices if c == str(value) or _same(value, c)), None)

    def corners(self) -> list[str]:
        """The values that bound what this dimension can give a run: both ends, or each choice."""
        return [_text(self.low), _text(self.high)] if self.is_range else list(self.choices)

    def describe(self) -> str:
        return f"{self.key}={self.text}"


def _same(value: Any, choice: str) -> bool:
    if isinstance(value, (bool, str)):  # bool("false") is True; text compares without case
        return str(value).lower() == choice.lower()
    try:
        return type(value)(choice) == value
    except (TypeError, ValueError):
        return False


def _text(x: float | None) -> str:
    return repr(x) if isinstance(x, float) and not float(x).is_integer() else str(int(x) if x is not None else x)


def as_override(value: Any) -> str:
    """A sampled value as `--set` would take it (floats in full, so a run repeats exactly)."""
    return repr(value) if isinstance(value, float) else str(value)


def parse_space(items: list[str], method_cls: type[Method[Any]], method: str) -> list[Dimension]:
    """Each `--space` item as a `Dimension` of `method_cls`'s config, with one-line errors for a
    malformed item, an unknown key, a value the key's type does not take, or an empty range."""
    if not items:
        raise ConfigError(f"hw3 tune needs at least one --space, such as {EXAMPLE}")
    fields = config_fields(method_cls)
    dims: dict[str, Dimension] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        where = f"--space {item!r}"
        if not sep or not key or not raw:
            raise ConfigError(f"{where}: write KEY=LOW..HIGH[:log] or KEY=A,B,C, such as {EXAMPLE}")
        if key == "seed":
            raise ConfigError(f"{where}: seeds are not searched; give --seeds 0,1 to average each trial over seeds")
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown config key '{key}' for method '{method}'{choices_hint(key, list(fields))}"
            )
        if key in dims:
            raise ConfigError(f"--space {key} is given twice; give each key once")
        typ = fields[key][0]
        dims[key] = _range(key, raw, typ, where) if ".." in raw else _choice(key, raw, typ, where)
    return list(dims.values())


def _range(key: str, raw: str, typ: Any, where: str) -> Dimension:
    body, _, scale = raw.partition(":")
    if scale not in ("", "log"):
        raise ConfigError(f"{where}: ':{scale}' is not a scale; write :log for a log-uniform range, or nothing")
    lo_text, _, hi_text = body.partition("..")
    if typ not in (int, float):
        raise ConfigError(f"{where}: '{key}' is not a number; give its values as a choice, such as {key}=A,B")
    low = coerce(lo_text.strip(), typ, f"--space {key} (its low end)")
    high = coerce(hi_text.strip(), typ, f"--space {key} (its high end)")
    if not low < high:
        raise ConfigError(f"{where}: the low end {low} must be below the high end {high}")
    if scale == "log" and low <= 0:
        raise ConfigError(f"{where}: a :log range needs a low end above 0 (got {low})")
    return Dimension(key, raw, float(low), float(high), scale == "log", typ is int)


def _choice(key: str, raw: str, typ: Any, where: str) -> Dimension:
    values = [v.strip() for v in raw.split(",")]
    if len(values) < 2 or not all(values):
        raise ConfigError(f"{where}: give two or more values (KEY=A,B) or a range (KEY=LOW..HIGH)")
    seen: dict[Any, str] = {}
    for value in values:
        typed = coerce(value, typ, f"--space {key}")
        if typed in seen:
            raise ConfigError(f"{where}: {seen[typed]!r} and {value!r} are the same value")
        seen[typed] = value
    return Dimension(key, raw, choices=tuple(values))


def space_text(dims: list[Dimension]) -> str:
    return "; ".join(d.describe() for d in dims)
