"""The Optuna study behind `hw3 tune`: its storage, what it searches, and how its trials stand.
The loop a worker runs over it is `runner.runs.tune.worker`.

Any number of workers, in one `hw3 tune` or in several on many machines, share a study through
its storage (a SQLite file by default, PostgreSQL for several machines). Each worker takes the
next trial until the study holds the trials asked for, finished or pruned:

- No trial runs twice, and no more run than asked: trial numbers come from the database, and a
  trial whose number puts it past the count of live ones (finished, pruned or running) is marked
  failed as surplus before it trains (two workers that asked at the same moment).
- A worker killed mid-trial stops sending heartbeats; once they are stale, any other worker marks
  the trial FAIL and puts its values back in the queue (Optuna's RetryHeartbeatStaleTrialCallback),
  so the study still ends with every trial it was asked for. A worker waits while others hold the last
  trials, to take such a retry up.
- Ctrl-C stops the running trial (its MLflow run KILLED, with a checkpoint), marks it FAIL and
  queues its values again: a second `hw3 tune` with the same arguments resumes the study.
- A trial whose run fails (a loss that is not finite) is marked FAIL and skipped: its values are
  a poor setting, not a fault of the study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError
from runner.runs.tune.space import Dimension, space_text

if TYPE_CHECKING:
    import optuna


# The attributes hw3 writes on an Optuna study and its trials: Optuna's names, kept in its store
# (the MLflow schema is runner/record.py).
ATTR_SEARCH = "hw3.search"  # what a study searches, in words: a second `hw3 tune` must ask the same
ATTR_PARENT = "hw3.parent_run_id"  # the MLflow parent run of the study's trials
ATTR_DEFAULTS = "hw3.defaults"  # on the trial that holds the defaults' values
ATTR_SURPLUS = "hw3.surplus"  # on a trial asked for after the study had its count: it never trained
ATTR_RUNS = "hw3.runs"  # a trial's MLflow runs, one per seed
ATTR_RETRY_OF = "hw3.retry_of"  # on a trial queued again after Ctrl-C stopped the one it repeats
ATTR_WORKER = "hw3.worker"  # HOST:PID of the process that runs (or ran) a trial
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
                f"--storage {redact_url(url)}: its database driver is not installed ({exc}); for PostgreSQL: "
                "pip install 'hw3[postgres]'"
            ) from None
        except Exception as exc:  # an unreachable server, bad credentials; or two workers making the tables at once
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt == 4 or "connect" in text.lower() or "authentication" in text.lower():
                raise ConfigError(f"--storage {redact_url(url)}: cannot open the study's database: {text}") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def redact_url(url: str) -> str:
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


# Settings that say where and how a trial runs, not what it finds: workers on other machines may
# set them differently and still join the same study.
WHERE_NOT_WHAT = frozenset({"device", "threads", "eval_batch_size", "log_every", "checkpoint_dir", "tsne_points"})


def search_of(
    method: str, where: str, dims: list[Dimension], select: str, seeds: list[int], fixed: list[tuple[str, Any]]
) -> Search:
    """What a study searches: its identity, from which its default name is made."""
    shared = tuple((k, str(v)) for k, v in fixed if k not in WHERE_NOT_WHAT)
    return Search(method, where, space_text(dims), select, tuple(seeds), shared)
