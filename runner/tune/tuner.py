"""`hw3 tune` from start to end: check everything, open (or join) the study and its parent MLflow
run, run the workers, then write the reality check on the parent run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from runner import record
from runner.errors import ConfigError, Hw3Error, RunInterrupted
from runner.plan import Plan, RunRequest, make_plan
from runner.plugins import get_manager
from runner.tune import reality, views
from runner.tune.space import Dimension, parse_space, space_text
from runner.tune.study import ATTR_PARENT, counts, default_storage, open_study, redact_url, search_of
from runner.tune.worker import TuneJob, WorkerLog, run_worker


@dataclass
class TuneResult:
    parent_run_id: str
    study: str
    storage: str
    status: str
    check: reality.RealityCheck | None
    logs: list[WorkerLog]


@dataclass
class Checked:
    """A tune, checked before anything starts."""

    base: RunRequest
    plan: Plan  # the base request's, planned
    dims: list[Dimension]
    seeds: list[int]
    defaults: dict[str, Any] | None  # the defaults' values of the space's keys, when the space holds them
    experiment: str
    name: str  # runs are named "<name> trial N seed S"


def check(req: RunRequest, space: list[str], select: str, seeds: list[int] | None, trials: int) -> Checked:
    """Every key and value of the space through the same config resolution as `hw3 run --set`
    (both ends of each range, each choice), the validator, the seeds and the trial count."""
    manager = get_manager()
    if req.resume:
        raise ConfigError("hw3 tune starts new runs; resume a trial's run on its own with hw3 run --resume RUN_ID")
    if trials < 1:
        raise ConfigError(f"--trials {trials}: must be at least 1")
    given = {k for k, _ in req.overrides}
    if seeds is not None and "seed" in given:
        raise ConfigError("give either --set seed=N or --seeds, not both")
    if "tsne_points" not in given:  # a trial's figures are not what a search is for; a chosen run can have them
        req = dataclasses.replace(req, overrides=[*req.overrides, ("tsne_points", 0)])
        given.add("tsne_points")
    base = make_plan(req, manager)
    if base.method_cls.kind != "adapt":
        raise ConfigError(
            f"hw3 tune chooses settings of adaptation methods by a validator; '{req.method}' is a "
            f"{base.method_cls.kind} method"
        )
    manager.validator(select, "--select")  # an oracle is allowed: it is the bound, and the table says so
    if base.resolved.settings.val_fraction <= 0:
        raise ConfigError("hw3 tune scores each trial on the validation splits; give --set val_fraction above 0")
    dims = parse_space(space, base.method_cls, req.method)
    for d in dims:
        if d.key in given:
            raise ConfigError(f"'{d.key}' is in both --set and --space; give it in one place")
        for value in d.corners():
            try:  # ranges and the like, which only the whole config shows
                make_plan(dataclasses.replace(req, overrides=[*req.overrides, (d.key, value)]), manager)
            except ConfigError as exc:
                raise ConfigError(f"--space {d.describe()}: {exc}") from None
    flat = base.resolved.flat()
    defaults = None
    if all(d.contains(flat[d.key]) for d in dims):
        defaults = {d.key: (flat[d.key] if d.is_range else d.choice_for(flat[d.key])) for d in dims}
    run_seeds = seeds if seeds is not None else [base.resolved.settings.seed]
    return Checked(
        req,
        base,
        dims,
        run_seeds,
        defaults,
        req.experiment or f"tune-{base.task.slug}",
        req.run_name or f"{req.method}-{base.task.slug}",
    )


def tune(
    req: RunRequest,
    space: list[str],
    *,
    trials: int,
    select: str,
    seeds: list[int] | None = None,
    workers: int | str = 1,
    storage: str | None = None,
    study: str | None = None,
    console: Console | None = None,
) -> TuneResult:
    """Search `space` for `trials` trials chosen by `select`, in `workers` processes (or join the
    study another `hw3 tune` runs), then the reality check on the parent run."""
    from runner.tracking import Tracker, tracking_uri
    from runner.workers import resolve_workers

    console = console or Console()
    c = check(req, space, select, seeds, trials)
    req = c.base
    url = storage or default_storage(tracking_uri())
    task, flat = c.plan.task, c.plan.resolved.flat()
    search = search_of(req.method, task.label, c.dims, select, c.seeds, [*req.overrides, ("preset", req.preset)])
    name = study or search.default_name()
    opened, made = open_study(url, name, search, c.defaults)
    tracker = Tracker()
    parent_id = str(opened.user_attrs.get(ATTR_PARENT, ""))
    if parent_id and not _exists(tracker, parent_id):
        parent_id = ""  # the study's parent lives in another MLflow store (another machine): a parent of our own
    tags = record.TuneTags(name, space_text(c.dims), select)
    rec = record.ParentRecord(req.method, task, c.seeds, {d.key: [d.text] for d in c.dims}, tune=tags)
    params = rec.params({k: v for k, v in flat.items() if k not in {d.key for d in c.dims} and k != "seed"})
    params.update({"trials": trials, "select": select, "study": name})
    n = resolve_workers(workers, flat.get("device", "auto"), trials)
    before = counts(opened)
    verb = "made" if made else "joined"
    console.print(
        f"[bold]tune[/] {escape(req.method)} on {task.label}: {verb} study {escape(name)} ({redact_url(url)}), "
        f"{before.done} of {trials} trials done; choosing by {select}; {n} worker(s); experiment {c.experiment}",
        highlight=False,
    )
    logs: list[WorkerLog] = []
    status = "RUNNING"
    with tracker.open(
        c.experiment, f"{c.name}-tune", rec, params=params if not parent_id else None, resume=parent_id
    ) as handle:
        if not parent_id:
            opened.set_user_attr(ATTR_PARENT, handle.run_id)
        warmup = max(1, -(-c.plan.resolved.settings.epochs // 3))  # the pruner spares the first third of each run
        job = TuneJob(
            url, name, trials, req, c.dims, c.seeds, select, handle.run_id, c.experiment, c.name, warmup_epochs=warmup
        )
        try:
            logs = _run_workers(job, n, flat.get("device", "auto"), console)
            status = "FINISHED"
        except (RunInterrupted, KeyboardInterrupt):
            handle.status = status = "KILLED"
            raise RunInterrupted(
                f"the tune stopped; study {name} keeps its finished trials and queues the interrupted one again; "
                f"run the same command to resume it (parent run {handle.run_id} is marked KILLED)"
            ) from None
        finally:
            rc = _report(tracker, handle.run_id, name, select, console)
    return TuneResult(handle.run_id, name, url, status, rc, logs)


def _exists(tracker: Any, run_id: str) -> bool:
    try:
        tracker.find_run(run_id, "run")
        return True
    except Hw3Error:
        return False


def _report(tracker: Any, parent_id: str, study: str, select: str, console: Console) -> reality.RealityCheck | None:
    """The reality check logged on the parent run: metrics, tune.md, tune.json and a scatter per validator."""
    trials = reality.trial_rows(tracker, study)
    if not trials:
        return None
    rc = reality.check_study(tracker, parent_id, select, trials)  # a study-level --select: recomputed over all
    tracker.log_metrics(views.metrics(rc), len(rc.finished))
    tracker.log_text(views.markdown(rc), "tune.md")
    tracker.log_text(json.dumps(views.as_json(rc), indent=2), "tune.json")
    for fname, fig in views.figures(rc).items():
        tracker.log_figure(fig, f"figures/{fname}")
    console.print(views.rich_table(rc))
    return rc


def _run_workers(job: TuneJob, n: int, device: str, console: Console) -> list[WorkerLog]:
    """`n` workers on the study: this process alone, or `n` spawned ones sharing the cores and
    GPUs as `hw3 sweep --workers` does. Ctrl-C reaches the whole process group: each worker stops
    its trial (checkpoint, KILLED, queued again) and this waits for them; a SIGTERM to this process
    alone is passed on to them the same way, and a worker whose parent died takes no new trial."""
    if n <= 1:
        return [run_worker(job, console)]
    import multiprocessing
    import os
    import signal

    from runner.workers import cores, device_for, spreads, threads_per_run, visible_gpus

    threads = threads_per_run(n, cores())
    gpus = visible_gpus() if device.strip().lower() in ("cuda", "auto") else 0
    console.print(f"{n} workers, {threads} thread(s) each; one line per trial as it ends", highlight=False)
    context = multiprocessing.get_context("spawn")
    results, stop = context.SimpleQueue(), context.Event()
    procs = []
    for slot in range(n):
        where = device_for("cuda", slot, gpus) if spreads(device, gpus) else ""
        one = dataclasses.replace(job, threads=threads, device=where, quiet=True, parent_pid=os.getpid())
        procs.append(context.Process(target=_worker_main, args=(one, results, stop), name=f"hw3-tune-worker-{slot}"))
    terminated = []

    def on_term(signum: int, frame: Any) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            try:
                for p in procs:
                    p.join(timeout=0.5)
            except KeyboardInterrupt:  # the workers stop their trials and start no other; wait for them
                interrupted = True
                stop.set()
                if terminated:  # a SIGTERM to this process alone: pass it on
                    for p in procs:
                        if p.is_alive() and p.pid:
                            os.kill(p.pid, signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)
    logs, errors = [], []
    while not results.empty():
        kind, value = results.get()
        if kind == "log":
            logs.append(value)
        elif kind == "interrupted":
            interrupted = True
        else:
            errors.append(value)
    died = [p for p in procs if p.exitcode not in (0, None)]
    if interrupted:
        raise RunInterrupted("interrupted")
    if errors:
        raise Hw3Error(errors[0])
    if died:
        raise Hw3Error(
            f"{len(died)} tune worker process(es) died (exit code {died[0].exitcode}); the study keeps every "
            "finished trial: run the same command to go on"
        )
    return logs


def _worker_main(job: TuneJob, results: Any, stop: Any) -> None:
    """One spawned worker: its share of the cores, then trials until the study is done or `stop`
    is set (a trial that was finishing when Ctrl-C came still finishes)."""
    import os
    import signal

    os.environ["OMP_NUM_THREADS"] = str(job.threads)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        results.put(("log", run_worker(job, should_stop=stop.is_set)))
    except (RunInterrupted, KeyboardInterrupt):
        results.put(("interrupted", ""))
    except Hw3Error as exc:
        results.put(("error", str(exc)))
