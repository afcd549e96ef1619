"""The `Method` base class: what one training step does, never the loop around it, and what
the rest of hw3 needs to know about a method's results."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypeVar

from runner.settings import RUN_KEYS

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from runner.context import Batch, RunContext
    from runner.settings import RunSettings

KINDS = ("adapt", "generate")
C = TypeVar("C")


@dataclasses.dataclass
class NoConfig:
    """A method without settings of its own."""


class ReportRow(NamedTuple):
    """Where a run belongs in `hw3 report`'s table: a row `label`, its `place` among the rows (0 a
    lower bound such as source only, 1 an adaptation method, 2 an upper bound) and its `order`
    within that place (lower first; the built-in methods use 10 to 30, so a new one comes after)."""

    label: str
    place: int = 1
    order: int = 100


class Method(ABC, Generic[C]):
    """Subclass this, set `name`, `kind` and `Config`, and register it with `hw3_register_methods`.

    The engine owns the loop: it calls `setup` once, `train_step` for every batch, `evaluate`
    after every epoch and `figures` at the end. Modules and optimizers stored as attributes are
    checkpointed and restored automatically (override `state_dict` for anything else).
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "adapt"
    description: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the name tables show (default: `name`), such as "DANN"
    report_order: ClassVar[int] = 100  # `ReportRow.order` of the default report row
    # Run settings this method starts from, such as {"epochs": 30}: above hw3's [defaults], below
    # registry.toml's [methods.NAME], a preset and --set. `hw3 show` names them as their origin.
    run_defaults: ClassVar[dict[str, Any]] = {}
    Config: ClassVar[type] = NoConfig
    primary_metric: ClassVar[str] = "target_acc"  # the figure `hw3 run` ends with
    # Metrics a parent run (`--seeds`, `hw3 sweep`) reports as mean and std, beside the primary
    # metric and every `selected/...` one.
    summary_metrics: ClassVar[tuple[str, ...]] = ()
    # The figures (file names under `figures/`) a report shows for a run; None: every one.
    report_figures: ClassVar[tuple[str, ...] | None] = None
    figure_captions: ClassVar[dict[str, str]] = {}  # file name -> what a report says under it
    # The metrics a report's section on a run shows, in order, with their labels; empty: the
    # primary and summary metrics under their own names.
    report_metrics: ClassVar[dict[str, str]] = {}

    def __init__(self, config: C) -> None:
        self.config = config

    def train_domains(self) -> dict[str, bool]:
        """Domains a training batch draws from, each mapped to whether its labels are used.

        Adaptation methods must not see target labels: `batch["target"].y` is None unless this
        says True (as only the target-only baseline does).
        """
        return {"source": True, "target": False} if self.kind == "adapt" else {"data": True}

    @classmethod
    def check_config(cls, config: Any, settings: RunSettings) -> None:
        """Refuse a combination of values no single `option()` range can, such as a stage longer
        than the run: raise `ConfigError` with one line. Called before any work starts."""

    @classmethod
    def report_note(cls, metrics: dict[str, float]) -> str:
        """A sentence a report prints under a run's metrics (how they were measured), or ''."""
        return ""

    def report_row(self) -> ReportRow | None:
        """The row of `hw3 report` this run's results belong to; None keeps them out of it."""
        return ReportRow(self.label or self.name, order=self.report_order) if self.kind == "adapt" else None

    @abstractmethod
    def setup(self, ctx: RunContext) -> None:
        """Build networks and optimizers on `ctx.device`."""

    @abstractmethod
    def train_step(self, ctx: RunContext, batch: Batch) -> dict[str, Any]:
        """One optimisation step; returns the losses and figures of merit to log, as 0-dim tensors
        (the engine reads them back once per log interval, so the step never waits for the device)
        or Python numbers."""

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """Metrics after an epoch, such as `target_acc`."""
        return {}

    def summarize(self, ctx: RunContext) -> dict[str, float]:
        """Metrics too costly for every epoch, computed once after training (logged at the last epoch)."""
        return {}

    def figures(self, ctx: RunContext) -> dict[str, Figure]:
        """Figures at the end of a run, keyed by file name (logged under `figures/`)."""
        return {}

    def tables(self, ctx: RunContext) -> dict[str, dict[str, Any]]:
        """Tables at the end of a run, keyed by name: {"columns": [...], "data": [[...], ...]}, logged
        as `tables/NAME.json` (MLflow's table layout), such as per-class accuracy by epoch."""
        return {}

    def artifacts(self, ctx: RunContext) -> dict[str, bytes]:
        """Files at the end of a run, keyed by their path among the run's artifacts, as bytes: what
        other code reads back from a run (an adaptation run's target validation predictions, which
        `hw3 tune` ensembles across trials). Written once; a resumed run writes them again whole."""
        return {}

    def images(self, ctx: RunContext) -> dict[str, Any]:
        """Pictures after every epoch, keyed by name: uint8 (H, W, 3) arrays logged as an image
        series stepped by epoch (MLflow shows a slider), such as a GAN's fixed-noise grid."""
        return {}

    def inference_model(self) -> torch.nn.Module | None:
        """The trained network to log as an MLflow model, taking images scaled to [0, 1]."""
        return None

    def inference_example(self, ctx: RunContext) -> torch.Tensor:
        """An input for the logged model's signature: two test images in [0, 1] by default."""
        return next(iter(ctx.domains.values())).test.images[:2].float().div(255)

    def state_dict(self) -> dict[str, Any]:
        """Every network, optimizer and scheduler attribute; a name starting with `_` marks one
        derived from the others (remade, not saved)."""
        import torch

        return {
            k: v.state_dict()
            for k, v in vars(self).items()
            if not k.startswith("_")
            and isinstance(v, (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            getattr(self, key).load_state_dict(value)


def check_method_class(obj: Any) -> str:
    """Why `obj` can't be registered as a method, or '' when it can."""
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        return f"register() got {obj!r}, which is not a subclass of runner.Method"
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name or ":" in name:
        return f"method class {obj.__name__} needs a `name` (a non-empty string without ':')"
    if obj.kind not in KINDS:
        return f"method '{name}' has kind {obj.kind!r}; use one of {', '.join(KINDS)}"
    if not dataclasses.is_dataclass(obj.Config):
        return f"method '{name}': Config must be a dataclass"
    clash = {f.name for f in dataclasses.fields(obj.Config)} & RUN_KEYS
    if clash:
        return f"method '{name}': Config redefines run settings {sorted(clash)}; give their defaults in run_defaults"
    unknown = set(getattr(obj, "run_defaults", {})) - RUN_KEYS
    if unknown:
        return f"method '{name}': run_defaults has {sorted(unknown)}, which are not run settings (see hw3 show)"
    return ""
