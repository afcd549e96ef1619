"""`hw3 report`: the course report's table, built from the runs in MLflow.

Rows are methods (source only, DANN, ADDA, the stronger method, any other adaptation method
found, target only), columns are pairs, cells are mean ± std of target accuracy over the
finished runs of that method on that pair, under one stated checkpoint-selection protocol.
"""

from __future__ import annotations

import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import Hw3Error
from runner.selection import PROTOCOLS

ROW_ORDER = ["source only", "dann", "adda", "selfens", "target only"]
ROW_LABELS = {"dann": "DANN", "adda": "ADDA", "selfens": "self-ensembling"}


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    latest: Any = None  # the newest run, whose t-SNE figures the report shows

    def text(self) -> str:
        if not self.values:
            return "-"
        mean = 100 * statistics.fmean(self.values)
        if len(self.values) == 1:
            return f"{mean:.2f} (1 run)"
        return f"{mean:.2f} ± {100 * statistics.stdev(self.values):.2f} ({len(self.values)} runs)"


@dataclass
class Report:
    protocol: str
    pairs: list[str]
    rows: list[str]
    cells: dict[tuple[str, str], Cell]
    tracking_uri: str


def row_of(run: Any) -> str | None:
    method = run.data.tags.get("method")
    if method == "baseline":
        return {"source": "source only", "target": "target only"}.get(run.data.params.get("train_on", ""))
    return method


def build(protocol: str = "last", pairs: list[str] | None = None, run_ids: set[str] | None = None) -> Report:
    """The table from the finished runs in hw3-* experiments (only `run_ids` when given)."""
    from runner.tracking import Tracker

    if protocol not in PROTOCOLS:
        raise Hw3Error(f"--protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    tracker = Tracker()
    client = tracker.client
    metric = f"selected/{protocol}/target_acc"
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("hw3-")]
    if not experiments:
        raise Hw3Error(f"no hw3 experiments in {tracker.uri}; run some methods first (hw3 run baseline ...)")
    runs = client.search_runs(
        experiments, filter_string="attributes.status = 'FINISHED'", max_results=5000,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
    for run in runs:
        pair, row = run.data.tags.get("pair"), row_of(run)
        if not pair or not row or run.data.tags.get("hw3.parent") == "true":
            continue
        if run.data.tags.get("hw3.sweep.child") == "true" or (run_ids is not None and run.info.run_id not in run_ids):
            continue  # tuning runs are not results; a suite's report shows its own runs
        if pairs and pair not in pairs:
            continue
        value = run.data.metrics.get(metric, run.data.metrics.get("target_acc") if protocol == "last" else None)
        if value is None:
            continue
        cell = cells[(row, pair)]
        cell.values.append(value)
        cell.runs.append(run.info.run_id)
        cell.latest = cell.latest or run
    found_pairs = sorted({p for _, p in cells})
    rows = [r for r in ROW_ORDER if any(k[0] == r for k in cells)]
    others = sorted({r for r, _ in cells} - set(ROW_ORDER))
    rows = (
        rows[: rows.index("target only")] + others + rows[rows.index("target only") :]
        if "target only" in rows
        else rows + others
    )
    return Report(protocol, pairs or found_pairs, rows, dict(cells), tracker.uri)


def rich_table(report: Report) -> Any:
    from rich.table import Table

    t = Table(
        title=f"target accuracy (%), mean ± std over runs; checkpoint: {PROTOCOLS[report.protocol]}",
        title_justify="left",
    )
    t.add_column("method", no_wrap=True)
    for pair in report.pairs:
        t.add_column(pair.replace(":", " → "))
    for row in report.rows:
        t.add_row(ROW_LABELS.get(row, row), *[report.cells.get((row, p), Cell()).text() for p in report.pairs])
    return t


def write(report: Report, out: Path) -> Path:
    """report.md in `out`, with each cell's newest t-SNE figures copied beside it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(["# Target accuracy (%)", "", *markdown(report, out)]) + "\n")
    return path


def markdown(report: Report, out: Path) -> list[str]:
    """The table, the runs behind each cell and their t-SNE figures (copied into `out`), as Markdown."""
    from mlflow import MlflowClient

    client = MlflowClient(report.tracking_uri)
    lines = [
        f"Mean ± std over finished runs. Checkpoint: **{PROTOCOLS[report.protocol]}**"
        f" (`--protocol {report.protocol}`).",
        f"Tracking store: `{report.tracking_uri}`.",
        "",
        "| method | " + " | ".join(p.replace(":", " → ") for p in report.pairs) + " |",
        "|---|" + "---|" * len(report.pairs),
    ]
    for row in report.rows:
        texts = [report.cells.get((row, p), Cell()).text() for p in report.pairs]
        lines.append(f"| {ROW_LABELS.get(row, row)} | " + " | ".join(texts) + " |")
    lines += ["", "## Runs behind each cell", ""]
    figures = []
    for (row, pair), cell in sorted(report.cells.items()):
        if pair not in report.pairs:
            continue
        lines.append(f"- {ROW_LABELS.get(row, row)}, {pair}: " + ", ".join(f"`{r}`" for r in cell.runs))
        for kind in ("class", "domain"):
            name = f"tsne_{kind}.png"
            try:
                local = client.download_artifacts(cell.latest.info.run_id, f"figures/{name}")
            except Exception:
                continue
            target = out / f"{pair.replace(':', '-')}_{row.replace(' ', '-')}_{name}"
            shutil.copyfile(local, target)
            figures.append((row, pair, kind, target.name))
    if figures:
        lines += ["", "## t-SNE of source and target test features (newest run of each cell)", ""]
        for row, pair, kind, name in figures:
            lines.append(f"**{ROW_LABELS.get(row, row)}, {pair}, by {kind}**  ")
            lines.append(f"![{row} {pair} {kind}]({name})")
            lines.append("")
    return lines
