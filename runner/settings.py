"""Typed settings: `option()` declares one (default, help, allowed range), `RunSettings` holds
those every run has, whatever its method. A method's own `Config` uses `option()` the same way,
so its values are checked as strictly as hw3's."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from runner.errors import ConfigError


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A config field with its one-line doc (shown by `hw3 show METHOD`) and, for numbers, its
    range: `ge`/`gt` a lower bound (inclusive/exclusive), `le`/`lt` an upper one. Every number
    must also be finite. Values outside are refused, with the range named, before any work."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds})


_SAYS = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
_HOLDS = {
    "ge": lambda v, b: v >= b,
    "gt": lambda v, b: v > b,
    "le": lambda v, b: v <= b,
    "lt": lambda v, b: v < b,
}


def check_value(field: dataclasses.Field[Any], value: Any, where: str) -> None:
    """Refuse `value` for `field` when it is outside the field's declared range, or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}={value}: must be a finite number")
    bounds = field.metadata.get("bounds", {})
    if not all(_HOLDS[k](value, b) for k, b in bounds.items()):
        raise ConfigError(f"{where}={value}: must be {describe_range(field)}")


def describe_range(field: dataclasses.Field[Any]) -> str:
    """`at least 1`, `greater than 0 and at most 1`, or '' for a field without bounds."""
    return " and ".join(f"{_SAYS[k]} {_number(b)}" for k, b in field.metadata.get("bounds", {}).items())


def _number(b: float) -> str:
    return f"{b:,}" if isinstance(b, int) and abs(b) >= 10_000 else str(b)


SEED_MAX = 2**32 - 1  # numpy's RandomState accepts no larger seed


@dataclasses.dataclass
class RunSettings:
    """Settings every run has, whatever its method."""

    epochs: int = option(10, "passes over the largest training split", ge=1)
    batch_size: int = option(64, "images drawn from each domain per training step", ge=1)
    seed: int = option(
        0, "seeds weights, shuffling and sampling; same seed, same metrics on the CPU", ge=0, le=SEED_MAX
    )
    device: str = option("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto",
        "autocast dtype, weights stay fp32: auto takes bf16 where it was measured faster (a CPU with AMX), else "
        "fp32 (on GPUs these small networks wait on kernel launches, and bf16 only adds casts); fp16 adds a "
        "gradient scaler",
    )
    channels_last: Literal["auto", "true", "false"] = option(
        "auto", "channels-last memory format for convolutions: auto takes it on CPUs (measured faster there)"
    )
    threads: int = option(0, "CPU threads for torch (0: torch's choice, which OMP_NUM_THREADS sets)", ge=0)
    compile: bool = option(False, "torch.compile each network (for GPUs; the first steps are slow while it compiles)")
    cuda_graphs: Literal["auto", "true", "false"] = option(
        "auto",
        "capture each network's forward and backward as CUDA graphs (torch.compile, mode reduce-overhead), so a "
        "step launches a few graphs rather than hundreds of kernels; CUDA only; auto: off until bench/gpu.sh "
        "measures it faster",
    )
    image_size: int = option(0, "side both domains are resized to; 0 keeps the first dataset's size", ge=0)
    channels: int = option(0, "channels both domains are converted to (1 or 3); 0 takes the largest")
    val_fraction: float = option(
        0.1, "share of each training split held out for validation, stratified by class (never trained on)", ge=0, lt=1
    )
    train_subset: int = option(0, "train on only this many images per domain (0: all); quick checks", ge=0)
    test_subset: int = option(0, "evaluate on only this many test images per domain (0: all)", ge=0)
    eval_batch_size: int = option(1000, "batch size for evaluation", ge=1)
    log_every: int = option(20, "log step-level training metrics every N steps", ge=1)
    checkpoint_dir: str = option("checkpoints", "folder for checkpoints, one subfolder per run ID")
    tsne_points: int = option(2000, "source + target test points in an adaptation run's t-SNE plots (0: none)", ge=0)


RUN_KEYS = frozenset(f.name for f in dataclasses.fields(RunSettings))
