"""`--executor slurm`: the many-runs commands' jobs as a Slurm job array, through submitit.

`SlurmExecutor.run(jobs, console, ended)` stands where the local pool's `side_by_side` does
(`runner.runs.parent.fan_out` calls either): it checks everything it can before anything is
submitted (sbatch on PATH, the partition, a tracking store the nodes can see), submits one
array (`limit` of it at once), then waits and calls `ended(index, outcome)` as each task ends.

In a job, `SlurmTask` runs the work with the job's CPUs as its threads. The stop policy there:
`scancel` and the time limit send SIGTERM, the run saves its checkpoint and ends KILLED, and the
next `hw3 reproduce` (or `hw3 run --resume`) resumes it; submitit's signal before the time limit
or a pre-emption (SIGUSR2) does the same and then requeues the task, which resumes its own run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from runner.errors import ConfigError, Hw3Error, RunFailed, RunInterrupted, choices_hint
from runner.runs.pool import Ended, Job, Placement, Work
from runner.scheduler import live_jobs

POLL_S = 2.0
GONE_GRACE_S = 15.0  # a task gone from squeue without a result yet: its result file may still be on the way
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")
MANIFEST = "hw3-jobs.json"  # in the log folder: which task runs which job, for a later `hw3 reproduce`


@dataclass
class SlurmOptions:
    """What `--slurm KEY=VALUE` sets: the sbatch options a cluster user expects, per task."""

    partition: str = ""
    time: int = 60  # minutes (`--slurm time=90` or time=1:30:00)
    cpus: int = 2  # per task; its runs' threads
    gpus: int = 0  # per task
    mem: str = ""  # per task, as sbatch takes it: 8G, 16000M
    account: str = ""
    qos: str = ""
    sbatch: list[str] = field(default_factory=list)  # more sbatch options, "--constraint=a100" (repeatable)
    logs: str = "slurm-logs"  # a folder the nodes can write: each task's output, submitit's files
    limit: int = 0  # tasks of the array running at once (0: all)
    wait: bool = True  # wait for the tasks and report them; False: submit and return (`--no-wait`)
    name: str = "hw3"  # the array's job name

    KEYS = ("partition", "time", "cpus", "gpus", "mem", "account", "qos", "sbatch", "logs", "limit")

    @classmethod
    def parse(cls, items: Sequence[str], wait: bool = True) -> SlurmOptions:
        """`--slurm KEY=VALUE` items, each checked: a one-line error names the bad one."""
        out = cls(wait=wait)
        for item in items:
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise ConfigError(f"--slurm {item!r}: write KEY=VALUE, such as --slurm partition=gpu")
            if key not in cls.KEYS:
                raise ConfigError(f"--slurm {key}: not an option{choices_hint(key, cls.KEYS)}")
            if key == "time":
                out.time = _minutes(value)
            elif key in ("cpus", "gpus", "limit"):
                if not value.isdigit() or (key == "cpus" and int(value) < 1):
                    low = 1 if key == "cpus" else 0
                    raise ConfigError(f"--slurm {key}={value}: write a whole number of at least {low}")
                setattr(out, key, int(value))
            elif key == "mem":
                if not re.fullmatch(r"\d+[KMGT]?", value, flags=re.IGNORECASE):
                    raise ConfigError(f"--slurm mem={value}: write it as sbatch takes it, such as 8G or 16000M")
                out.mem = value.upper()
            elif key == "sbatch":
                if not value.startswith("--"):
                    raise ConfigError(f"--slurm sbatch={value}: write a long sbatch option, such as --constraint=a100")
                out.sbatch.append(value)
            else:
                setattr(out, key, value)
        return out

    def parameters(self, tasks: int) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters."""
        extra: dict[str, Any] = {}
        for option in self.sbatch:
            key, _, value = option[2:].partition("=")
            extra[key.replace("-", "_")] = value or True
        params: dict[str, Any] = {
            "job_name": self.name,
            "time": self.time,
            "cpus_per_task": self.cpus,
            "ntasks_per_node": 1,
            "array_parallelism": self.limit or tasks,
            "additional_parameters": extra,
        }
        for key, value in (("partition", self.partition), ("mem", self.mem), ("account", self.account),
                           ("qos", self.qos)):  # fmt: skip
            if value:
                params[key] = value
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        return params


def _minutes(text: str) -> int:
    """A time limit in sbatch's forms (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole
    minutes, seconds rounded up."""
    days, dash, clock = text.partition("-") if "-" in text else ("0", "", text)
    parts = clock.split(":")
    if not (days.isdigit() and all(p.isdigit() for p in parts) and len(parts) <= 3):
        raise ConfigError(f"--slurm time={text}: write minutes (90) or sbatch's [D-]HH:MM:SS (1:30:00)")
    n = [int(p) for p in parts]
    if dash:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (n + [0, 0])[:3]
    else:  # MM, MM:SS, HH:MM:SS
        hours, minutes, seconds = ([0, *n, 0][:3] if len(n) < 3 else n) if len(n) > 1 else (0, n[0], 0)
    total = int(days) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise ConfigError(f"--slurm time={text}: at least one minute")
    return total


class Submitted(Hw3Error):
    """`--no-wait`: the tasks are submitted; nothing has ended yet."""

    exit_code = 0


def check_cluster(options: SlurmOptions, tracking_uri: str) -> None:
    """Everything that would fail in every task, as one line, before anything is submitted."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise ConfigError(
            "--executor slurm: no sbatch on PATH; run this on a Slurm login node (or load its module), or use "
            "--executor local"
        )
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'hw3[slurm]'") from None
    partitions = _partitions()
    if options.partition and partitions and options.partition not in partitions:
        raise ConfigError(
            f"--slurm partition={options.partition}: no such partition{choices_hint(options.partition, partitions)}"
        )
    _check_store(tracking_uri)
    logs = Path(options.logs).absolute()
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--slurm logs={options.logs}: cannot make that folder ({exc.strerror})") from None


def _partitions() -> list[str]:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(
            f"--executor slurm: sinfo failed ({_first_line(exc)}); is the cluster reachable from here?"
        ) from None
    return sorted({p.strip().rstrip("*") for p in out.stdout.split() if p.strip()})


def _nodes() -> list[str]:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(set(out.stdout.split()))


def _check_store(uri: str) -> None:
    """A file store (SQLite, a folder of runs) on a disk of this host alone, where the cluster has
    nodes other than this host, is a store the tasks cannot see: they would each log to a store
    of their own, or fail."""
    if uri.startswith(("http://", "https://", "postgresql", "mysql", "mssql", "databricks")):
        return
    path = uri.removeprefix("sqlite:///").removeprefix("file://")
    where = Path(path).absolute()
    import socket

    here = {socket.gethostname(), socket.gethostname().split(".")[0], "localhost"}
    others = [n for n in _nodes() if n not in here]
    if others and any(str(where).startswith(p + "/") for p in NODE_LOCAL):
        raise ConfigError(
            f"the MLflow store {where} is on this host's own disk ({where.parts[1]}), which the nodes "
            f"({', '.join(others[:3])}) cannot see: put it on a shared filesystem (MLFLOW_TRACKING_URI=sqlite:////shared/"
            "mlflow.db) or use an MLflow server (MLFLOW_TRACKING_URI=http://HOST:5000)"
        )


def absolute_store(uri: str) -> str:
    """The tracking URI as a task on any node, in any folder, reads it: a relative SQLite path made absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).absolute())
    return uri


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class SlurmTask:
    """One task of the array: the work, its threads the task's CPUs. Plain data (submitit pickles
    it); what comes back is plain data too, never an exception with a traceback."""

    work: Work
    tracking_uri: str

    def __call__(self) -> tuple[str, Any, str]:
        import signal

        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if threads:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint and requeue
        asked: list[int] = []

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # outside training; while it trains, engine.StopFlag holds SIGTERM

        def usr2(signum: int, frame: Any) -> None:  # the time limit is near, or a pre-emption
            asked.append(signum)
            handler = signal.getsignal(signal.SIGTERM)
            if callable(handler):
                handler(signal.SIGTERM, frame)  # the run stops at its next step, as on SIGTERM

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGUSR2, usr2)
        place = Placement(Console(soft_wrap=True), threads, "", pooled=True)
        try:
            return "ok", self.work(place), ""
        except (RunInterrupted, KeyboardInterrupt) as exc:
            run_id = getattr(exc, "run_id", "")
            if asked and callable(requeue):
                self.work = _resumed(self.work, run_id)
                requeue(signal.SIGUSR2, None)  # __submitit_checkpoint__ below, then requeued
            return "interrupted", str(exc) or "interrupted", run_id
        except Hw3Error as exc:
            return "error", type(exc).__name__, str(exc)

    def __submitit_checkpoint__(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _resumed(work: Work, run_id: str) -> Work:
    resumed = getattr(work, "resumed", None)
    return resumed(run_id) if resumed is not None and run_id else work


@dataclass
class SlurmExecutor:
    """Jobs as one Slurm job array, waited for (or not, with `options.wait` False)."""

    options: SlurmOptions
    tracking_uri: str
    labels: list[str] = field(default_factory=list)  # what the manifest names each task by (a suite item)
    submitted: list[str] = field(default_factory=list)  # the tasks' job IDs

    def run(self, jobs: Sequence[Job], console: Console, ended: Ended) -> None:
        import logging

        import submitit

        logging.getLogger("submitit").setLevel(logging.ERROR)  # its sacct fallbacks on clusters without accounting
        check_cluster(self.options, self.tracking_uri)
        logs = Path(self.options.logs).absolute()
        executor = submitit.SlurmExecutor(folder=logs / "%j", max_num_timeout=3)
        executor.update_parameters(**self.options.parameters(len(jobs)))
        uri = absolute_store(self.tracking_uri)
        try:
            with executor.batch():
                handles = [executor.submit(SlurmTask(job.work, uri)) for job in jobs]
        except Exception as exc:  # sbatch refused: an account, a QoS, a time over the partition's limit
            raise ConfigError(f"--executor slurm: sbatch refused the array: {_first_line(exc)}") from None
        self.submitted = [h.job_id for h in handles]
        _write_manifest(logs, dict(zip(self.submitted, self.labels or [j.label for j in jobs], strict=True)))
        at_once = f", {self.options.limit} at a time" if self.options.limit else ""
        array = self.submitted[0].split("_")[0] if self.submitted else "?"
        console.print(
            f"submitted {len(jobs)} task(s) as Slurm job array {array}{at_once}; logs in {logs}", highlight=False
        )
        if not self.options.wait:
            raise Submitted(
                f"{len(jobs)} task(s) in Slurm job array {array}; run the same command again once they end to "
                "collect them (squeue shows them meanwhile)"
            )
        self._wait(jobs, handles, console, ended)

    def _wait(self, jobs: Sequence[Job], handles: list[Any], console: Console, ended: Ended) -> None:
        left = dict(enumerate(handles))
        gone_since: dict[int, float] = {}
        stopped: list[RunInterrupted] = []
        try:
            while left:
                alive = live_jobs([h.job_id for h in left.values()])
                for i, handle in sorted(left.items()):
                    if handle.paths.result_pickle.exists():
                        outcome = _outcome(jobs[i].label, handle, stopped)
                    elif handle.job_id not in alive:
                        since = gone_since.setdefault(i, time.monotonic())
                        if time.monotonic() - since < GONE_GRACE_S:
                            continue
                        outcome = _gone(jobs[i].label, handle)
                    else:
                        continue
                    del left[i]
                    ended(i, outcome)
                if left:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            ids = [h.job_id for h in left.values()]
            _scancel(ids)  # the tasks stop as on scancel: checkpoint saved, KILLED
            raise RunInterrupted(
                f"cancelled {len(ids)} Slurm task(s); their runs saved checkpoints and are marked KILLED"
            ) from None
        if stopped:
            first = next((e for e in stopped if e.run_id), stopped[0])
            out = RunInterrupted(f"{len(stopped)} Slurm task(s) were stopped (scancel, the time limit) and are KILLED")
            out.run_id = first.run_id
            raise out


def _outcome(label: str, handle: Any, stopped: list[RunInterrupted]) -> Callable[[], Any]:
    try:
        kind, value, text = handle.result()
    except Exception as exc:  # the task raised past SlurmTask (an import error on the node, say)
        message = f"Slurm task {handle.job_id} failed: {_first_line(exc)}; its log: {handle.paths.stderr}"

        def failed() -> Any:
            raise RunFailed(message)

        return failed
    if kind == "ok":
        return lambda: value
    if kind == "interrupted":
        stop = RunInterrupted(f"{label}: {value}")
        stop.run_id = text
        stopped.append(stop)

        def interrupted() -> Any:
            raise RunFailed(f"stopped in Slurm task {handle.job_id} ({value}); run the same command to resume")

        return interrupted
    errors = {"ConfigError": ConfigError, "RunFailed": RunFailed}

    def error() -> Any:
        raise errors.get(value, Hw3Error)(text)

    return error


def _gone(label: str, handle: Any) -> Callable[[], Any]:
    def gone() -> Any:
        raise RunFailed(
            f"Slurm task {handle.job_id} ended without a result (cancelled before it began, out of memory, "
            f"or killed); its log: {handle.paths.stderr}; run the same command to resume or redo it"
        )

    return gone


def _scancel(ids: Sequence[str]) -> None:
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)


def _write_manifest(logs: Path, tasks: dict[str, str]) -> None:
    path = logs / MANIFEST
    known = read_manifest(logs)
    known.update(tasks)
    path.write_text(json.dumps(known, indent=1))


def read_manifest(logs: Path | str) -> dict[str, str]:
    """Job ID -> label of every task submitted with this log folder."""
    path = Path(logs).absolute() / MANIFEST
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
