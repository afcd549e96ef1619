"""`hw3 report`: the course report's table, built from the runs in MLflow.

Rows are what each run's method said it is (`Method.report_row`, stored as the run's `hw3.row`
tags): lower bounds first (source only), then adaptation methods in the order their plugins
loaded, then upper bounds (target only). Columns are pairs; cells are mean ± std of target
accuracy over the finished runs of that row on that pair, under one stated selection protocol.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import record
from runner.adapt.selection import LAST, LAST_HELP
from runner.errors import Hw3Error
from runner.method import ReportRow
from runner.runs.parent import mean_std

if TYPE_CHECKING:
    from runner.store import Store


def protocols() -> dict[str, str]:
    """Each epoch-selection protocol a report can use, in words: the last epoch, and the best
    epoch by each registered validator (an oracle said to be one)."""
    from runner.runs.plugins import get_manager
    from runner.validator import is_study_level

    out = {LAST: LAST_HELP}
    for name, reg in get_manager().validators().items():
        v = reg.obj
        oracle = " (uses target labels: an upper bound, not a result)" if v.uses_target_labels else ""
        among = " (each run's epochs scored against each other)" if is_study_level(v) else ""
        out[name] = f"best {name}: {v.description}{oracle}{among}"
    return out


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    latest: Any = None  # the newest run, whose figures the report shows

    def text(self) -> str:
        if not self.values:
            return "-"
        mean, std = mean_std(self.values)
        if len(self.values) == 1:
            return f"{100 * mean:.2f} (1 run)"
        return f"{100 * mean:.2f} ± {100 * std:.2f} ({len(self.values)} runs)"


@dataclass
class Report:
    protocol: str
    pairs: list[str]
    rows: list[str]
    cells: dict[tuple[str, str], Cell]
    tracking_uri: str


def row_of(run: Any) -> ReportRow | None:
    """The row a run's method gave it (its `hw3.row` tags; an empty label: not in the table). A run
    made before rows were tagged asks its method, with the config in its params, if installed."""
    if record.ROW in run.data.tags:
        return record.RunRecord.from_run(run).row
    method = run.data.tags.get(record.METHOD)
    return _row_from_params(method, run.data.params) if method else None


def _row_from_params(method: str, params: dict[str, str]) -> ReportRow | None:
    import dataclasses
    import typing

    from runner.config import coerce
    from runner.runs.plugins import get_manager

    registered = get_manager().methods().get(method)
    if registered is None:
        return ReportRow(method)
    cls = registered.obj
    hints = typing.get_type_hints(cls.Config)
    values = {}
    for f in dataclasses.fields(cls.Config):
        if f.name in params:
            try:
                values[f.name] = coerce(params[f.name], hints[f.name], f.name)
            except Hw3Error:
                continue
    try:
        return cls(cls.Config(**values)).report_row()
    except Exception:
        return ReportRow(method)


def order_rows(rows: dict[str, tuple[ReportRow, str]]) -> list[str]:
    """Row labels by place, then order, then the order their methods' plugins registered them,
    then by name; `rows` maps each label to (its row, its method)."""
    from runner.runs.plugins import get_manager

    known = {name: i for i, name in enumerate(get_manager().methods())}
    return sorted(rows, key=lambda r: (rows[r][0].place, rows[r][0].order, known.get(rows[r][1], len(known)), r))


# Params that say how a run was computed or logged, not what was trained: runs differing only
# in these share a cell.
NOT_SETTINGS = {
    "seed", "device", "threads", "precision", "channels_last", "compile", "cuda_graphs", "eval_batch_size",
    "log_every",
    "checkpoint_dir", "tsne_points", record.CHECKPOINT_DIR, record.METHOD, record.PAIR, record.DATASET,
}  # fmt: skip


def build(
    protocol: str = "last",
    pairs: list[str] | None = None,
    run_ids: set[str] | None = None,
    filters: list[tuple[str, str]] | None = None,
) -> Report:
    """The table from the finished runs in hw3-* experiments (only `run_ids` when given, only runs
    whose params match every `filters` KEY=VALUE). Runs of one row and pair that differ in a
    setting (not in seed or compute) are never averaged together: the row splits, each part
    labelled by the settings that tell them apart."""
    from runner.store import reader, reap_orphans

    known = protocols()
    if protocol not in known:
        raise Hw3Error(f"--protocol {protocol!r}: choose from {', '.join(known)}")
    tracker = reader()
    reap_orphans(tracker)  # a run whose process died is KILLED, not a result
    metric = f"selected/{protocol}/target_acc"
    if not tracker.experiment_ids("hw3-"):
        raise Hw3Error(f"no hw3 experiments in {tracker.uri}; run some methods first (hw3 run baseline ...)")
    runs = tracker.search(experiments="hw3-", status="FINISHED")
    found: dict[tuple[str, str], list[tuple[Any, dict[str, str], float]]] = defaultdict(list)
    places: dict[str, tuple[ReportRow, str]] = {}
    for run in runs:
        rec = record.RunRecord.from_run(run)
        pair, row = rec.task.pair, row_of(run)
        if not pair or not row or record.is_parent(run):
            continue
        if rec.is_search or (run_ids is not None and run.info.run_id not in run_ids):
            continue  # tuning runs are not results; a suite's report shows its own runs
        values = {**run.data.params, **rec.settings}  # what a resume may change is a tag, `setting.KEY`
        if (pairs and pair not in pairs) or any(values.get(k) != v for k, v in filters or []):
            continue
        value = record.selection(run).get(metric, run.data.metrics.get("target_acc") if protocol == "last" else None)
        if value is None:
            continue
        settings = {k: v for k, v in values.items() if k not in NOT_SETTINGS}
        found[(row.label, pair)].append((run, settings, value))
        places[row.label] = (row, rec.method)
    cells: dict[tuple[str, str], Cell] = {}
    labels: dict[str, tuple[ReportRow, str]] = {}
    for (label, pair), members in found.items():
        for suffix, group in _split_by_settings(members).items():
            cell = cells.setdefault((label + suffix, pair), Cell())
            labels[label + suffix] = places[label]
            for run, _, value in group:
                cell.values.append(value)
                cell.runs.append(run.info.run_id)
                cell.latest = cell.latest or run
    found_pairs = sorted({p for _, p in cells})
    return Report(protocol, pairs or found_pairs, order_rows(labels), cells, tracker.uri)


def _split_by_settings(members: list[tuple[Any, dict[str, str], float]]) -> dict[str, list]:
    """The runs of one cell grouped by their settings: {" [lr=0.01]": [...], ...}, or {"": all}."""
    groups: dict[tuple, list] = defaultdict(list)
    for member in members:
        groups[tuple(sorted(member[1].items()))].append(member)
    if len(groups) == 1:
        return {"": members}
    keys = sorted({k for g in groups for k, _ in g})
    differ = [k for k in keys if len({dict(g).get(k) for g in groups}) > 1]
    return {" [" + ", ".join(f"{k}={dict(g).get(k)}" for k in differ) + "]": runs for g, runs in groups.items()}


def rich_table(report: Report) -> Any:
    from rich.table import Table

    t = Table(
        title=f"target accuracy (%), mean ± std over runs; checkpoint: {protocols()[report.protocol]}",
        title_justify="left",
    )
    t.add_column("method", no_wrap=True)
    for pair in report.pairs:
        t.add_column(pair.replace(":", " → "))
    for row in report.rows:
        t.add_row(row, *[report.cells.get((row, p), Cell()).text() for p in report.pairs])
    return t


def write(report: Report, out: Path) -> Path:
    """report.md in `out`, with the figures of each cell's newest run copied beside it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(["# Target accuracy (%)", "", *markdown(report, out)]) + "\n")
    return path


def markdown(report: Report, out: Path) -> list[str]:
    """The table, the runs behind each cell and their figures (copied into `out`), as Markdown."""
    from runner.store import reader

    tracker = reader(report.tracking_uri)
    lines = [
        f"Mean ± std over finished runs. Checkpoint: **{protocols()[report.protocol]}**"
        f" (`--protocol {report.protocol}`).",
        f"Tracking store: `{report.tracking_uri}`.",
        "",
        "| method | " + " | ".join(p.replace(":", " → ") for p in report.pairs) + " |",
        "|---|" + "---|" * len(report.pairs),
    ]
    for row in report.rows:
        texts = [report.cells.get((row, p), Cell()).text() for p in report.pairs]
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    lines += ["", "## Runs behind each cell", ""]
    figures = []
    for (row, pair), cell in sorted(report.cells.items()):
        if pair not in report.pairs:
            continue
        lines.append(f"- {row}, {pair}: " + ", ".join(f"`{r}`" for r in cell.runs))
        for name, local, text in report_figures(tracker, cell.latest):
            target = out / f"{pair.replace(':', '-')}_{row.lower().replace(' ', '-')}_{name}"
            shutil.copyfile(local, target)
            figures.append((row, pair, name, text, target.name))
    if figures:
        lines += ["", "## Figures of the newest run of each cell", ""]
        for row, pair, name, text, file in figures:
            lines.append(f"**{row}, {pair}: {text}**  ")
            lines.append(f"![{row} {pair} {name}]({file})")
            lines.append("")
    return lines


def report_figures(tracker: Store, run: Any) -> list[tuple[str, str, str]]:
    """(file name, local copy, caption) of the figures a report shows for `run`: those its method
    lists in `report_figures`, or every `figures/*.png` (also when the method is not installed)."""
    from runner.runs.plugins import get_manager

    method = get_manager().methods().get(run.data.tags.get(record.METHOD, ""))
    wanted = method.obj.report_figures if method else None
    captions = method.obj.figure_captions if method else {}
    try:
        present = tracker.artifacts(run.info.run_id, "figures")
    except Exception:
        return []
    names = [n for n in (wanted if wanted is not None else sorted(present)) if n in present and n.endswith(".png")]
    out = []
    for name in names:
        try:
            local = str(tracker.artifact(run.info.run_id, f"figures/{name}"))
        except Exception:
            continue
        out.append((name, local, captions.get(name) or name.removesuffix(".png").replace("_", " ")))
    return out
