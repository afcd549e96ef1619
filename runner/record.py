"""The schema of what hw3 writes to MLflow: every tag and param name in one place (as MLflow keeps
its own in `mlflow_tags.py`), and `RunRecord` / `ParentRecord`, a run's identity as typed fields
with the tags and params it is written as and a reader back from an MLflow run.

Nothing else spells an `hw3.*` name (tests/test_structure.py checks): a reader that wants a tag
asks this module for its name, so renaming one is a change here alone.
"""

from __future__ import annotations

import getpass
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.config import Task
from runner.method import ReportRow
from runner.version import __version__

if TYPE_CHECKING:
    from runner.config import ResolvedConfig

# -- tags a user filters on (plain names, shown as they are in the UI) ----------------------------
METHOD = "method"
PAIR = "pair"
DATASET = "dataset"
SEED = "seed"
DEVICE = "device"  # where it trained, in words: "cpu (2 threads)", "cuda:0 (NVIDIA H200)"
COMPUTE = "compute"  # precision and memory format
SELECTION = "selection"  # which epoch the headline metrics come from
# Run settings a resume may change (`--epochs`, `--device`, ...). MLflow params are write-once, so
# these are tags named `setting.KEY`, rewritten on every resume, and never params.
SETTING_PREFIX = "setting."

# -- hw3's own tags --------------------------------------------------------------------------------
ROW = "hw3.row"  # the row of `hw3 report`'s table; "" keeps a run out of it
ROW_PLACE = "hw3.row.place"
ROW_ORDER = "hw3.row.order"
PROCESS = "hw3.process"  # PID@HOST:START of the process training the run, to find orphans
PROCESSES = "hw3.processes"  # data-parallel processes, when more than one
SLURM_JOB = "hw3.slurm.job"  # the Slurm job (or array task, `123_4`) that trains the run
CHECKPOINT = "hw3.checkpoint"  # shown in the UI; resuming never reads it (editable)
ERROR = "hw3.error"  # why a run FAILED, one line
VERSION = "hw3.version"
PARENT = "hw3.parent"  # "true" on a parent run (`--seeds`, `hw3 sweep`)
SEEDS = "hw3.seeds"  # a parent's seeds, "0,1,2"
SWEEP = "hw3.sweep"  # "true" on a sweep's parent
SWEEP_CHILD = "hw3.sweep.child"  # "true" on each of its children
GRID = "hw3.grid"  # a sweep parent's grid, "lr=0.1,0.01; batch_size=64"
GRID_PREFIX = "hw3.grid."  # one tag per grid key on each sweep child
TUNE = "hw3.tune"  # "true" on a tune's parent
STUDY = "hw3.tune.study"  # the Optuna study, on a tune's parent and each trial's run
SPACE = "hw3.tune.space"  # a tune parent's space, "lr=0.0001..0.01:log; dropout=0..0.7"
SELECT = "hw3.tune.select"  # the validator a tune searches with
TRIAL = "hw3.tune.trial"  # a trial's number in its study, on each of its runs
DEFAULTS_TRIAL = "hw3.tune.defaults"  # "true" on the runs of the trial with the defaults' values
TRIAL_VALUE_PREFIX = "hw3.tune.value."  # one tag per searched key on each of a trial's runs
STOPPED_EARLY = "hw3.stopped_early"  # why a run ended before its last epoch (a pruned trial)
SUITE = "hw3.suite"
SUITE_ITEM = "hw3.suite.item"
SUITE_SETTINGS = "hw3.suite.settings"  # digest of a suite's preset, overrides and data root
# The epoch each selection protocol picks, one tag a protocol: `hw3.selected/im` = "epoch=12
# score=1.45 target_acc=0.912". Tags, not metrics: one-point charts would bury the run page's curves.
SELECTED_PREFIX = "hw3.selected/"
SELECTION_TABLE = "tables/selection.json"  # the same as one table in the run's artifacts

# -- params (write-once) ---------------------------------------------------------------------------
CHECKPOINT_DIR = "hw3.checkpoint_dir"  # absolute; resume reads this, never the editable tag
SEEDS_PARAM = "seeds"
GRID_PARAM_PREFIX = "grid."

# -- artifacts other hw3 code reads back from a run ------------------------------------------------
# An adaptation run's target validation predictions at every evaluated epoch (softmax, float16),
# which a study-level validator (EnsV) ensembles across epochs and across a study's trials.
TARGET_VAL_PREDICTIONS = "predictions/target_val.npz"

# -- MLflow's own names that hw3 writes ------------------------------------------------------------
MLFLOW_PARENT = "mlflow.parentRunId"  # nests a child under its parent in the UI
MLFLOW_USER = "mlflow.user"  # "Created by"
MLFLOW_SOURCE_NAME = "mlflow.source.name"  # "Source": the command that made the run
MLFLOW_SOURCE_TYPE = "mlflow.source.type"
MLFLOW_NOTE = "mlflow.note.content"  # the run's description in the UI
SHARED_VIEW = "mlflow.sharedViewState."  # + a key: a runs-table view the UI opens by link
EXPERIMENT_KIND = "mlflow.experimentKind"  # the view older MLflow 3 UIs open; 3.18 reads the link's workflowType
TRAINING_KIND = "custom_model_development"  # the training view, not MLflow 3's GenAI one

# Run settings that a `--resume` may change: tags, not params.
RESUMABLE = ("epochs", "device", "eval_batch_size", "log_every")


SELECTED = "selected/"  # a run's summary names them `selected/<protocol>/...`, as `hw3 report` reads them


def split_selection(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """A run's final figures as (the selection's `selected/...` ones, the rest)."""
    picked = {k: v for k, v in metrics.items() if k.startswith(SELECTED)}
    return picked, {k: v for k, v in metrics.items() if k not in picked}


def selection_tags(picked: dict[str, float]) -> dict[str, str]:
    """One tag per protocol, its figures as `key=value` words (read back by `selection`)."""
    by_protocol: dict[str, list[str]] = {}
    for key, value in picked.items():
        protocol, _, what = key.removeprefix(SELECTED).partition("/")
        shown = str(int(value)) if what == "epoch" else repr(float(value))
        by_protocol.setdefault(protocol, []).append(f"{what}={shown}")
    return {SELECTED_PREFIX + protocol: " ".join(words) for protocol, words in by_protocol.items()}


def selection_table(picked: dict[str, float]) -> dict[str, Any]:
    """One row per protocol: the epoch it picks, its score there, and the figures at that epoch."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in picked.items():
        protocol, _, what = key.removeprefix(SELECTED).partition("/")
        rows.setdefault(protocol, {})[what] = value
    columns = ["protocol", "epoch", "score", *sorted({w for r in rows.values() for w in r} - {"epoch", "score"})]
    data = [[name, *(r.get(c) for c in columns[1:])] for name, r in rows.items()]
    return {"columns": columns, "data": data}


def selection(run: Any) -> dict[str, float]:
    """A run's `selected/<protocol>/<figure>` values: from its tags, or from the metrics a run
    logged before the selection became tags."""
    out: dict[str, float] = {}
    for protocol, words in _prefixed(run.data.tags, SELECTED_PREFIX).items():
        for word in words.split():
            what, _, value = word.partition("=")
            out[f"{SELECTED}{protocol}/{what}"] = float(value)
    return out or {k: v for k, v in run.data.metrics.items() if k.startswith(SELECTED)}


def setting_tag(key: str) -> str:
    return SETTING_PREFIX + key


def grid_tag(key: str) -> str:
    return GRID_PREFIX + key


def _prefixed(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def row_tags(row: ReportRow | None) -> dict[str, str]:
    """The tags `hw3 report` reads a run's row from; an empty label keeps the run out of the table."""
    if row is None:
        return {ROW: ""}
    return {ROW: row.label, ROW_PLACE: str(row.place), ROW_ORDER: str(row.order)}


def origin_tags() -> dict[str, str]:
    """Who made a run and with what command, versions included, as the UI shows them."""
    import torch

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        user = os.environ.get("USER", "")
    argv = [os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]]
    if argv[0] in ("__main__.py", "-c", "-m"):
        argv[0] = "hw3"
    import mlflow

    return {
        MLFLOW_USER: user,
        MLFLOW_SOURCE_NAME: shlex.join(argv)[:500],
        MLFLOW_SOURCE_TYPE: "LOCAL",
        VERSION: __version__,
        "torch.version": torch.__version__,
        "mlflow.version": mlflow.__version__,
        "python.version": platform.python_version(),
    }


@dataclass(frozen=True)
class SuiteItem:
    """A run's place in `hw3 reproduce`: the suite, the item's key and the settings digest."""

    suite: str
    item: str
    settings: str


@dataclass(frozen=True)
class TrialTags:
    """A run's place in `hw3 tune`: its study, its trial's number, whether that trial holds the
    defaults' values, and the values it tries (as `--set` text)."""

    study: str
    number: int
    defaults: bool = False
    values: dict[str, str] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        tags = {STUDY: self.study, TRIAL: str(self.number), DEFAULTS_TRIAL: str(self.defaults).lower()}
        return tags | {TRIAL_VALUE_PREFIX + k: v for k, v in self.values.items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> TrialTags | None:
        """A trial's run's tags read back; None for any other run (a tune's parent has a study, no trial)."""
        number = tags.get(TRIAL, "")
        if STUDY not in tags or not number.isdigit():
            return None
        defaults = tags.get(DEFAULTS_TRIAL) == "true"
        return cls(tags[STUDY], int(number), defaults, _prefixed(tags, TRIAL_VALUE_PREFIX))


@dataclass
class RunRecord:
    """One run as MLflow holds it: who it is (method, task, seed), where it belongs (report row,
    parent, sweep setting or suite item), how it ran (device, processes) and where its checkpoint
    is. `tags()` and `params()` write it; `from_run` reads it back."""

    method: str
    task: Task
    seed: int | None = None
    row: ReportRow | None = None
    parent_run_id: str = ""
    sweep_setting: dict[str, str] | None = None  # a sweep child's grid values
    suite: SuiteItem | None = None
    trial: TrialTags | None = None  # a `hw3 tune` trial's run
    processes: int = 1
    checkpoint_dir: str = ""  # the folder holding <run id>/last.pt
    checkpoint: str = ""  # the file, once the run has an ID
    device: str = ""
    compute: str = ""
    process: str = ""
    slurm_job: str = ""  # the Slurm job training it, as squeue names it
    settings: dict[str, str] = field(default_factory=dict)  # the RESUMABLE settings' current values
    error: str = ""

    def tags(self) -> dict[str, str]:
        tags = {METHOD: self.method, **self.task.tags(), SELECTION: "last", **row_tags(self.row)}
        if self.seed is not None:
            tags[SEED] = str(self.seed)
        for key, value in self._where():
            if value:
                tags[key] = value
        if self.processes > 1:
            tags[PROCESSES] = str(self.processes)
        if self.parent_run_id:
            tags[MLFLOW_PARENT] = self.parent_run_id
        if self.sweep_setting is not None:
            tags[SWEEP_CHILD] = "true"
            tags.update({grid_tag(k): v for k, v in self.sweep_setting.items()})
        if self.suite is not None:
            tags.update({SUITE: self.suite.suite, SUITE_ITEM: self.suite.item, SUITE_SETTINGS: self.suite.settings})
        if self.trial is not None:
            tags.update(self.trial.tags())
        if self.checkpoint:
            tags[CHECKPOINT] = self.checkpoint
        tags.update({setting_tag(k): v for k, v in self.settings.items()})
        return tags

    def changing_tags(self) -> dict[str, str]:
        """What a resume says again: the process, where it computes, the settings it may change."""
        tags = {k: v for k, v in self._where() if v}
        tags[SLURM_JOB] = self.slurm_job  # "" once it trains outside Slurm
        return {**tags, **{setting_tag(k): v for k, v in self.settings.items()}}

    def _where(self) -> tuple[tuple[str, str], ...]:
        return (DEVICE, self.device), (COMPUTE, self.compute), (PROCESS, self.process), (SLURM_JOB, self.slurm_job)

    def params(self, resolved: ResolvedConfig) -> dict[str, str]:
        """The write-once params: every resolved setting a resume cannot change, and the checkpoint folder."""
        values = {k: v for k, v in resolved.flat().items() if k not in RESUMABLE}
        return {METHOD: self.method, **self.task.tags(), **values, CHECKPOINT_DIR: self.checkpoint_dir}

    @staticmethod
    def resumable(resolved: ResolvedConfig) -> dict[str, str]:
        flat = resolved.flat()
        return {k: str(flat[k]) for k in RESUMABLE if k in flat}

    @property
    def is_sweep_child(self) -> bool:
        return self.sweep_setting is not None

    @property
    def is_search(self) -> bool:
        """A sweep child's or a tune trial's run: a search, not a result for `hw3 report`."""
        return self.sweep_setting is not None or self.trial is not None

    @classmethod
    def from_run(cls, run: Any) -> RunRecord:
        """What an MLflow run says of itself (older hw3 runs included: their `epochs` is a param,
        their checkpoint folder perhaps only in the `hw3.checkpoint` tag)."""
        tags, params = run.data.tags, run.data.params  # tags are editable in the UI: read them warily
        source, _, target = tags.get(PAIR, "").partition(":")
        task = Task.pair_of(source, target) if PAIR in tags else Task.single(tags.get(DATASET, ""))
        row = None
        if tags.get(ROW):
            row = ReportRow(tags[ROW], _int(tags.get(ROW_PLACE), 1), _int(tags.get(ROW_ORDER), 100))
        grid = _prefixed(tags, GRID_PREFIX)
        suite = None
        if SUITE in tags:
            suite = SuiteItem(tags[SUITE], tags.get(SUITE_ITEM, ""), tags.get(SUITE_SETTINGS, ""))
        settings = {k: params[k] for k in RESUMABLE if k in params}
        settings.update(_prefixed(tags, SETTING_PREFIX))
        seed = tags.get(SEED, params.get(SEED))
        return cls(
            method=tags.get(METHOD, ""),
            task=task,
            seed=_int(seed, None),
            row=row,
            parent_run_id=tags.get(MLFLOW_PARENT, ""),
            sweep_setting=grid if tags.get(SWEEP_CHILD) == "true" else None,
            suite=suite,
            trial=TrialTags.from_tags(tags),
            processes=_int(tags.get(PROCESSES), 1) or 1,
            checkpoint_dir=params.get(CHECKPOINT_DIR, "") or _old_checkpoint_dir(run),
            checkpoint=tags.get(CHECKPOINT, ""),
            device=tags.get(DEVICE, ""),
            compute=tags.get(COMPUTE, ""),
            process=tags.get(PROCESS, ""),
            slurm_job=tags.get(SLURM_JOB, ""),
            settings=settings,
            error=tags.get(ERROR, ""),
        )


def _int(text: str | None, default: Any) -> Any:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _old_checkpoint_dir(run: Any) -> str:
    """A run made before the checkpoint-folder param: its `hw3.checkpoint` tag when the tag has the
    shape hw3 wrote (`<folder>/<run id>/last.pt`), else its `checkpoint_dir` param."""
    from pathlib import Path

    tagged = Path(run.data.tags.get(CHECKPOINT, ""))
    if tagged.name == "last.pt" and tagged.parent.name == run.info.run_id:
        return str(tagged.parent.parent)
    return str(run.data.params.get("checkpoint_dir", ""))


def is_parent(run: Any) -> bool:
    return bool(run.data.tags.get(PARENT) == "true")


@dataclass(frozen=True)
class TuneTags:
    """What a `hw3 tune` parent run searches: its study, space (as text) and validator."""

    study: str
    space: str
    select: str


@dataclass
class ParentRecord:
    """A parent run (`hw3 run --seeds`, `hw3 sweep`): what it groups and how."""

    method: str
    task: Task
    seeds: list[int]
    grid: dict[str, list[str]] | None = None  # a sweep's
    tune: TuneTags | None = None

    def tags(self) -> dict[str, str]:
        tags = {METHOD: self.method, **self.task.tags(), PARENT: "true", SEEDS: ",".join(map(str, self.seeds))}
        if self.grid is not None:
            tags[SWEEP] = "true"
            tags[GRID] = "; ".join(f"{k}={','.join(v)}" for k, v in self.grid.items())
        if self.tune is not None:
            tags.update({TUNE: "true", STUDY: self.tune.study, SPACE: self.tune.space, SELECT: self.tune.select})
        return tags

    def params(self, shared: dict[str, Any]) -> dict[str, Any]:
        """`shared`: the settings every child has in common."""
        grid = {GRID_PARAM_PREFIX + k: ",".join(v) for k, v in (self.grid or {}).items()}
        return {METHOD: self.method, **self.task.tags(), **grid, SEEDS_PARAM: ",".join(map(str, self.seeds)), **shared}
