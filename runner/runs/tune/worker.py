"""One worker's loop over a study's trials (`hw3 tune`): take the next trial, run it as an
`hw3 run` per seed with a pruner asked after each epoch, tell the study, until the study holds
the trials asked for. What keeps several workers, on one machine or many, from running a trial
twice or leaving one behind is in `runner.runs.tune.study`'s docstring."""

from __future__ import annotations

import dataclasses
import functools
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
from runner.errors import Hw3Error, RunFailed, RunInterrupted
from runner.runs.plan import RunRequest
from runner.runs.tune.space import Dimension, as_override
from runner.runs.tune.study import (
    ATTR_DEFAULTS,
    ATTR_RETRY_OF,
    ATTR_RUNS,
    ATTR_SURPLUS,
    ATTR_WORKER,
    SURPLUS_NOTE,
    counts,
    heartbeat_s,
    storage,
)

if TYPE_CHECKING:
    import optuna

    from runner.context import RunContext
    from runner.runs.pool import Placement


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
                functools.partial(_objective, job=job, console=console, log=log, current=current),
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

    from runner.runs.execute import execute
    from runner.runs.plugins import get_manager
    from runner.validator import is_study_level

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
    together = is_study_level(get_manager().validator(job.select, "--select"))
    scores, runs = [], []
    for i, seed in enumerate(job.seeds):
        req = _trial_request(job, trial.number, defaults, values, seed)
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
        if together:
            continue  # scored with the study's other trials, below
        score = result.metrics.get(f"selected/{job.select}/score")
        if score is None or score != score:
            raise RunFailed(f"run {result.run_id} logged no score of validator '{job.select}'")
        scores.append(score)
    value = _score_together(trial, job.select, runs) if together else statistics.fmean(scores)
    log.ran += 1
    _say(console, log, f"{label} done: {job.select} {value:.4g} ({escape(shown)})  runs {', '.join(runs)}")
    return value


def _trial_request(job: TuneJob, number: int, defaults: bool, values: dict[str, Any], seed: int) -> RunRequest:
    """One seed's run of trial `number`: the base request with the trial's values, recorded as a
    trial of the study under the tune's parent run."""
    overrides = [(k, as_override(v)) for k, v in values.items()] + [("seed", seed)]
    if job.threads:
        overrides.append(("threads", job.threads))
    if job.device:
        overrides.append(("device", job.device))
    return dataclasses.replace(
        job.base,
        overrides=[*job.base.overrides, *overrides],
        parent_run_id=job.parent_run_id,
        experiment=job.experiment,
        run_name=f"{job.run_name} trial {number} seed {seed}",
        trial=record.TrialTags(job.study, number, defaults, {k: str(as_override(v)) for k, v in values.items()}),
    )


def _score_together(trial: optuna.Trial, select: str, runs: list[str]) -> float:
    """A study-level validator's score of this trial against the ensemble of the trials finished so
    far and itself (their runs' last epochs): what TPE is told. The reality check at the end scores
    every finished trial against all of them again; its table, not this value, is the choice."""
    from optuna.trial import TrialState

    from runner.runs.plugins import get_manager
    from runner.runs.tune.reality import candidate_scores
    from runner.store import reader

    done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    candidates = {t.number: list(t.user_attrs.get(ATTR_RUNS, [])) for t in done if t.number != trial.number}
    candidates[trial.number] = runs
    validator = get_manager().validator(select, "--select")
    # Trials of other workers whose runs this MLflow store does not hold are left out.
    value = candidate_scores(reader(), validator, candidates, skip_unreadable=True).get(trial.number)
    if value is None or value != value:
        raise RunFailed(f"runs {', '.join(runs)} saved no target validation predictions for validator '{select}'")
    return value


def _pruner(trial: optuna.Trial, seed_index: int, select: str) -> Callable[[RunContext, dict[str, float]], str]:
    """After each epoch: report the validator's best score so far (what the trial's value will be),
    and end the run when the pruner says so. A study-level validator has no per-epoch score, so
    nothing is reported and its trials are never pruned."""
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


@dataclass
class TuneWork:
    """One tune worker as work for the pool (`runner.runs.pool`) or a Slurm task: in a process of
    its own it takes that process's share of the threads and its GPU, prints a line per trial as
    it ends, and (in the pool) starts no new trial once the `hw3 tune` that spawned it is gone."""

    job: TuneJob

    def __call__(self, place: Placement) -> WorkerLog:
        if not place.pooled:
            return run_worker(self.job, place.console, place.should_stop)
        job = dataclasses.replace(
            self.job, threads=place.threads, device=place.device, quiet=True, parent_pid=place.parent_pid
        )
        return run_worker(job, Console(soft_wrap=True), place.should_stop)

    def under(self, parent_run_id: str, experiment: str) -> TuneWork:
        """The same worker, its trials' runs children of `parent_run_id`."""
        return TuneWork(dataclasses.replace(self.job, parent_run_id=parent_run_id, experiment=experiment))


def run_worker(
    job: TuneJob, console: Console | None = None, should_stop: Callable[[], bool] | None = None
) -> WorkerLog:
    """`work`, its unexpected errors (the database went away mid-study) as one line."""
    try:
        return work(job, console or Console(soft_wrap=True), should_stop)
    except Hw3Error:  # RunInterrupted and RunFailed among them; KeyboardInterrupt is no Exception
        raise
    except Exception as exc:  # the database went away mid-study, say
        raise Hw3Error(
            f"study '{job.study}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
