"""The Optuna study behind `hw3 tune`, and one worker's loop over its trials.

Any number of workers, in one `hw3 tune` or in several on many machines, share a study through
its storage (a SQLite file by default, PostgreSQL for several machines). Each worker takes the
next trial until the study holds the trials asked for, finished or pruned:

- No trial runs twice, and no more run than asked: trial numbers come from the database, and a
  trial whose number puts it past the count of live ones (finished, pruned or running) is marked
  failed as surplus before it trains (two workers that asked at the same moment).
- A worker killed mid-trial stops sending heartbeats; once they are stale, any other worker marks
  the trial FAIL and puts its values back in the queue (Optuna's RetryHeartbeatStaleTrialCallback), so the
  study still ends with every trial it was asked for. A worker waits while others hold the last
  trials, to take such a retry up.
- Ctrl-C stops the running trial (its MLflow run KILLED, with a checkpoint), marks it FAIL and
  queues its values again: a second `hw3 tune` with the same arguments resumes the study.
- A trial whose run fails (a loss that is not finite) is marked FAIL and skipped: its values are
  a poor setting, not a fault of the study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from runner import record
from runner.errors import ConfigError, Hw3Error, RunFailed, RunInterrupted
from runner.plan import RunRequest
from runner.tune.space import Dimension, as_override, space_text

if TYPE_CHECKING:
    import optuna

    from runner.context import RunContext

# Study and trial attributes (their names are in runner/record.py with every other hw3 name).
ATTR_SEARCH = record.STUDY_SEARCH
ATTR_PARENT = record.STUDY_PARENT
ATTR_DEFAULTS = record.TRIAL_DEFAULTS
ATTR_SURPLUS = record.TRIAL_SURPLUS
ATTR_RUNS = record.TRIAL_RUNS
ATTR_RETRY_OF = record.TRIAL_RETRY_OF
ATTR_WORKER = record.TRIAL_WORKER
SURPLUS_NOTE = "surplus: the study already had its trials; this one never trained"


def heartbeat_s() -> int:
    """Seconds between a running trial's heartbeats; a trial silent for three of them is stale.
    HW3_TUNE_HEARTBEAT changes it (tests use a short one)."""
    return max(1, int(os.environ.get("HW3_TUNE_HEARTBEAT", "10")))


def default_storage(tracking_uri: str) -> str:
    """A SQLite file beside MLflow's own (`optuna.db` next to `mlflow.db`), else in this folder."""
    from pathlib import Path

    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


def storage(url: str) -> optuna.storages.RDBStorage:
    """The study's storage, with heartbeats and a retry for a trial whose worker died."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if not url.startswith(("sqlite:", "postgresql", "postgres:", "mysql")):
        raise ConfigError(
            f"--storage {url!r}: give a database URL, such as sqlite:///optuna.db or postgresql://USER:PASSWORD@HOST/DB"
        )
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # hw3 says what happens, once, in its own words
    if url.startswith(("postgresql://", "postgres://")):  # SQLAlchemy's default driver differs by version:
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # name the one hw3[postgres] installs
    # SQLite: wait for another worker's write rather than fail at once on a locked file.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    beat = heartbeat_s()
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
                warnings.simplefilter("ignore")
                return RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=beat,
                    grace_period=3 * beat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                )
        except ImportError as exc:
            raise ConfigError(
                f"--storage {_safe(url)}: its database driver is not installed ({exc}); for PostgreSQL: "
                "pip install 'hw3[postgres]'"
            ) from None
        except Exception as exc:  # an unreachable server, bad credentials; or two workers making the tables at once
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt == 4 or "connect" in text.lower() or "authentication" in text.lower():
                raise ConfigError(f"--storage {_safe(url)}: cannot open the study's database: {text}") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.partition(':')[0]}:***@{tail}"


@dataclass(frozen=True)
class Search:
    """What a study searches, stored on it: a second `hw3 tune` must ask the same to join."""

    method: str
    where: str  # the pair
    space: str
    select: str
    seeds: tuple[int, ...]
    fixed: tuple[tuple[str, str], ...]  # --set and --preset values every trial shares

    def digest(self) -> str:
        return hashlib.sha1(repr(dataclasses.astuple(self)).encode()).hexdigest()[:8]

    def default_name(self) -> str:
        return f"{self.method}-{self.where.replace(':', '-')}-{self.select}-{self.digest()}"

    def text(self) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed) or "none"
        seeds = ",".join(map(str, self.seeds))
        return f"{self.method} on {self.where}; space {self.space}; select {self.select}; seeds {seeds}; fixed {fixed}"


def open_study(url: str, name: str, search: Search, defaults: dict[str, Any] | None) -> tuple[optuna.Study, bool]:
    """The study `name`, made with the defaults' values as its first trial when it is new, or
    joined when it exists and searches the same. Returns (study, made)."""
    import optuna

    store = storage(url)
    sampler = optuna.samplers.TPESampler(seed=search.seeds[0], n_startup_trials=6)
    # A trial stops when its best score so far is below the median of earlier trials at the same
    # epoch: never in the first 5 trials, nor before each trial's second epoch.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    try:
        study = optuna.create_study(
            storage=store, study_name=name, sampler=sampler, pruner=pruner, direction="maximize"
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=store, study_name=name, sampler=sampler, pruner=pruner)
        theirs = study.user_attrs.get(ATTR_SEARCH)
        if theirs is not None and theirs != search.text():
            raise ConfigError(
                f"study '{name}' searches something else ({theirs}); give the same arguments to join it, "
                "or another --study NAME"
            ) from None
        return study, False
    study.set_user_attr(ATTR_SEARCH, search.text())
    if defaults is not None:
        study.enqueue_trial(defaults, user_attrs={ATTR_DEFAULTS: True})
    return study, True


@dataclass
class Counts:
    done: int = 0  # finished or pruned: what the trials asked for count
    running: int = 0
    waiting: int = 0  # queued: the defaults, a retry
    failed: int = 0  # failed runs and killed workers, surplus ones left out


def counts(study: optuna.Study) -> Counts:
    from optuna.trial import TrialState

    out = Counts()
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            out.done += 1
        elif t.state == TrialState.RUNNING:
            out.running += 1
        elif t.state == TrialState.WAITING:
            out.waiting += 1
        elif not t.user_attrs.get(ATTR_SURPLUS):
            out.failed += 1
    return out


@dataclass
class TuneJob:
    """What one worker needs, plain data so it crosses to a spawned process."""

    storage: str
    study: str
    trials: int
    base: RunRequest  # the method, pair and --set values every trial shares
    dims: list[Dimension]
    seeds: list[int]
    select: str
    parent_run_id: str
    experiment: str
    run_name: str
    threads: int = 0  # CPU threads of each run (0: torch's choice)
    device: str = ""  # this worker's device, when the workers spread over GPUs
    quiet: bool = False  # one line per trial instead of each run's epochs
    warmup_epochs: int = 1  # the pruner waits this many epochs of a run before it may stop it
    parent_pid: int = 0  # a spawned worker's parent: once it is gone, no new trial starts


@dataclass
class WorkerLog:
    ran: int = 0
    pruned: int = 0
    failed: int = 0
    lines: list[str] = field(default_factory=list)


class _Surplus(Exception):
    pass


def work(job: TuneJob, console: Console, should_stop: Callable[[], bool] | None = None) -> WorkerLog:
    """Take trials from the study until it holds `job.trials` finished or pruned ones, or until
    `should_stop()` says to (raises RunInterrupted then)."""
    import optuna

    # The sampler and pruner are not stored with a study: every worker makes its own. TPE samples
    # at random for the first 6 trials (the defaults among them); each worker draws its own
    # numbers, and TPE's constant liar keeps two workers from picking the same point. A trial
    # stops when its best score so far is below the median of earlier trials' at the same epoch:
    # never in the first 5 trials, nor in the first third of a run (a slow start is not a bad one).
    sampler = optuna.samplers.TPESampler(seed=job.seeds[0] * 1000 + os.getpid() % 1000, n_startup_trials=6)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=job.warmup_epochs)
    study = optuna.load_study(storage=storage(job.storage), study_name=job.study, sampler=sampler, pruner=pruner)
    log = WorkerLog()
    poll = max(1.0, heartbeat_s() / 2)
    while True:
        if job.parent_pid and os.getppid() != job.parent_pid:
            return log  # `hw3 tune` itself was killed: start nothing new
        if should_stop is not None and should_stop():
            raise RunInterrupted("stopped before its next trial")
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and what study.optimize calls itself
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, and its values queued again
        c = counts(study)
        if c.done >= job.trials:
            return log
        if c.done + c.running >= job.trials and not c.waiting:
            time.sleep(poll)  # others hold the last trials; one may come back as a retry
            continue
        current: list[optuna.Trial] = []
        try:
            study.optimize(
                lambda trial, current=current: _objective(trial, job, console, log, current),
                n_trials=1,
                catch=(RunFailed, _Surplus),
            )
        except (RunInterrupted, KeyboardInterrupt):
            if current:  # queue its values again, for whoever resumes the study
                trial = current[0]
                study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number, **_defaults_attr(trial)})
            raise


def _defaults_attr(trial: optuna.Trial) -> dict[str, Any]:
    return {ATTR_DEFAULTS: True} if trial.user_attrs.get(ATTR_DEFAULTS) else {}


def _surplus(trial: optuna.Trial, wanted: int) -> bool:
    """Whether live trials numbered before this one already make up the study's count."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ahead = [t for t in trial.study.get_trials(deepcopy=False, states=live) if t.number < trial.number]
    return len(ahead) >= wanted


def _objective(trial: optuna.Trial, job: TuneJob, console: Console, log: WorkerLog, current: list[Any]) -> float:
    import optuna

    from runner.run import execute

    if _surplus(trial, job.trials):
        trial.set_user_attr(ATTR_SURPLUS, True)
        raise _Surplus(SURPLUS_NOTE)
    current.append(trial)
    trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
    values = {d.key: d.suggest(trial) for d in job.dims}
    defaults = bool(trial.user_attrs.get(ATTR_DEFAULTS))
    label = f"trial {trial.number}" + (" (the defaults)" if defaults else "")
    shown = " ".join(f"{k}={_short(v)}" for k, v in values.items())
    if not job.quiet:
        console.print(f"[bold]{label}[/]: {escape(shown)}", highlight=False)
    scores, runs = [], []
    for i, seed in enumerate(job.seeds):
        overrides = [(k, as_override(v)) for k, v in values.items()] + [("seed", seed)]
        if job.threads:
            overrides.append(("threads", job.threads))
        if job.device:
            overrides.append(("device", job.device))
        req = dataclasses.replace(
            job.base,
            overrides=[*job.base.overrides, *overrides],
            parent_run_id=job.parent_run_id,
            experiment=job.experiment,
            run_name=f"{job.run_name} trial {trial.number} seed {seed}",
            sweep_setting={k: as_override(v) for k, v in values.items()},  # tagged, and kept out of hw3 report
            trial=record.TrialTags(job.study, trial.number, defaults),
        )
        try:
            result = execute(
                req, Console(file=io.StringIO()) if job.quiet else console, early_stop=_pruner(trial, i, job.select)
            )
        except RunFailed as exc:
            log.failed += 1
            _say(console, log, f"{label} failed ({escape(shown)}): {escape(str(exc))}")
            raise
        runs.append(result.run_id)
        trial.set_user_attr(ATTR_RUNS, runs)
        if result.stopped_early:
            log.pruned += 1
            _say(console, log, f"{label} pruned after epoch {len(result.history)} ({escape(shown)})")
            raise optuna.TrialPruned()
        score = result.metrics.get(f"selected/{job.select}/score")
        if score is None or score != score:
            raise RunFailed(f"run {result.run_id} logged no score of validator '{job.select}'")
        scores.append(score)
    log.ran += 1
    value = statistics.fmean(scores)
    _say(console, log, f"{label} done: {job.select} {value:.4g} ({escape(shown)})  runs {', '.join(runs)}")
    return value


def _pruner(trial: optuna.Trial, seed_index: int, select: str) -> Callable[[RunContext, dict[str, float]], str]:
    """After each epoch: report the validator's best score so far (what the trial's value will be),
    and end the run when the pruner says so."""
    key = f"validator/{select}"
    best = float("-inf")

    def ask(ctx: RunContext, metrics: dict[str, float]) -> str:
        nonlocal best
        value = metrics.get(key, float("nan"))
        if value == value:  # not NaN
            best = max(best, value)
        if best == float("-inf"):
            return ""
        trial.report(best, seed_index * ctx.settings.epochs + ctx.epoch)
        if trial.should_prune():
            return "pruned: its validator score lagged the median of earlier trials at this epoch"
        return ""

    return ask


def _say(console: Console, log: WorkerLog, line: str) -> None:
    log.lines.append(line)
    console.print(line, highlight=False)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_worker(
    job: TuneJob, console: Console | None = None, should_stop: Callable[[], bool] | None = None
) -> WorkerLog:
    """`work`, its unexpected errors (the database went away mid-study) as one line."""
    try:
        return work(job, console or Console(soft_wrap=True), should_stop)
    except Hw3Error:
        raise
    except (KeyboardInterrupt, RunInterrupted):
        raise
    except Exception as exc:  # the database went away mid-study, say
        raise Hw3Error(
            f"study '{job.study}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def search_of(
    method: str, where: str, dims: list[Dimension], select: str, seeds: list[int], fixed: list[tuple[str, Any]]
) -> Search:
    return Search(method, where, space_text(dims), select, tuple(seeds), tuple((k, str(v)) for k, v in fixed))
