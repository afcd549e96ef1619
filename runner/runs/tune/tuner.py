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
from runner.runs.parent import Child, Executor, FanOut, Parent, Summary, fan_out
from runner.runs.plan import Plan, RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.tune import reality, views
from runner.runs.tune.space import Dimension, parse_space, space_text
from runner.runs.tune.study import ATTR_PARENT, counts, default_storage, open_study, redact_url, search_of
from runner.runs.tune.worker import TuneJob, TuneWork, WorkerLog


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
    executor: Executor | None = None,
) -> TuneResult:
    """Search `space` for `trials` trials chosen by `select`, in `workers` processes (or join the
    study another `hw3 tune` runs), then the reality check on the parent run."""
    from runner.runs.placement import resolve_workers
    from runner.runs.slurm import absolute_store
    from runner.store import reader, tracking_uri

    console = console or Console()
    c = check(req, space, select, seeds, trials)
    req = c.base
    url = storage or default_storage(tracking_uri())
    if executor is not None:  # the tasks open it from any folder of any node
        url = absolute_store(url)
    task, flat = c.plan.task, c.plan.resolved.flat()
    search = search_of(req.method, task.label, c.dims, select, c.seeds, [*req.overrides, ("preset", req.preset)])
    name = study or search.default_name()
    opened, made = open_study(url, name, search, c.defaults)
    tracker = reader()
    parent = _parent(c, opened, name, select, trials, tracker)
    n = resolve_workers(workers, flat.get("device", "auto"), trials)
    before = counts(opened)
    verb = "made" if made else "joined"
    console.print(
        f"[bold]tune[/] {escape(req.method)} on {task.label}: {verb} study {escape(name)} ({redact_url(url)}), "
        f"{before.done} of {trials} trials done; choosing by {select}; {n} worker(s); experiment {c.experiment}",
        highlight=False,
    )
    warmup = max(1, -(-c.plan.resolved.settings.epochs // 3))  # the pruner spares the first third of each run
    job = TuneJob(url, name, trials, req, c.dims, c.seeds, select, "", c.experiment, c.name, warmup_epochs=warmup)
    workers_ = [Child(TuneWork(job), f"tune worker {i + 1}") for i in range(n)]
    checks: list[reality.RealityCheck | None] = [None]

    def summarize(out: FanOut) -> Summary | None:
        checks[0] = rc = _check(tracker, out.parent_run_id, name, select)
        if rc is None:
            return None
        console.print(views.rich_table(rc))
        texts = {"tune.md": views.markdown(rc), "tune.json": json.dumps(views.as_json(rc), indent=2)}
        figures = {f"figures/{fname}": fig for fname, fig in views.figures(rc).items()}
        return Summary(views.metrics(rc), texts, figures, step=len(rc.finished))

    if n > 1:
        console.print(f"{n} workers; one line per trial as it ends", highlight=False)
    try:
        out = fan_out(
            workers_, parent=parent, summarize=summarize, keep_going=False, what="tune",
            console=console, workers=n, device=flat.get("device", "auto"), executor=executor,
        )  # fmt: skip
    except RunInterrupted as exc:
        raise RunInterrupted(
            f"the tune stopped; study {name} keeps its finished trials and queues the interrupted one again; "
            f"run the same command to resume it ({str(exc).rsplit('; ', 1)[-1]})"
        ) from None
    return TuneResult(out.parent_run_id, name, url, out.status, checks[0], out.finished)


def _parent(c: Checked, opened: Any, name: str, select: str, trials: int, tracker: Any) -> Parent:
    """The tune's parent run: the study's own (kept in its attributes) when this MLflow store has
    it, so every `hw3 tune` joining the study reports to one parent; else a new one."""
    req, task, flat = c.base, c.plan.task, c.plan.resolved.flat()
    parent_id = str(opened.user_attrs.get(ATTR_PARENT, ""))
    if parent_id and not _exists(tracker, parent_id):
        parent_id = ""  # the study's parent lives in another MLflow store (another machine): a parent of our own
    tags = record.TuneTags(name, space_text(c.dims), select)
    rec = record.ParentRecord(req.method, task, c.seeds, {d.key: [d.text] for d in c.dims}, tune=tags)
    params = rec.params({k: v for k, v in flat.items() if k not in {d.key for d in c.dims} and k != "seed"})
    params.update({"trials": trials, "select": select, "study": name})

    def opened_parent(run_id: str) -> None:
        if not parent_id:
            opened.set_user_attr(ATTR_PARENT, run_id)

    return Parent(c.experiment, f"{c.name}-tune", rec, params, resume=parent_id, opened=opened_parent)


def _exists(tracker: Any, run_id: str) -> bool:
    try:
        tracker.find_run(run_id, "run")
        return True
    except Hw3Error:
        return False


def _check(tracker: Any, parent_id: str, study: str, select: str) -> reality.RealityCheck | None:
    """The reality check of every finished trial of the study (a study-level --select is
    recomputed over all of them), or None before any."""
    trials = reality.trial_rows(tracker, study)
    return reality.check_study(tracker, parent_id, select, trials) if trials else None
