"""The report folder of `hw3 reproduce`: Markdown and HTML with the suite's tables and figures,
every number and picture taken from the runs in MLflow. Which metrics and figures a run shows
is what its method declares (`primary_metric`, `summary_metrics`, `report_figures`)."""

from __future__ import annotations

import datetime
import html
import re
import shutil
from pathlib import Path
from typing import Any

from runner import record


def write_report(suite: str, description: str, outcomes: list[Any], out: Path, digest: str) -> Path:
    """report.md and report.html in `out`, figures beside them; returns the HTML file."""
    import runner.commands.report as table_report
    from runner.store import reader

    tracker = reader()
    out.mkdir(parents=True, exist_ok=True)
    runs = {o.run_id: tracker.find_run(o.run_id, "run") for o in outcomes if o.run_id}
    lines = [
        f"# hw3 reproduce: {suite}",
        "",
        description,
        "",
        f"Written {datetime.datetime.now().isoformat(timespec='seconds')} from the runs in `{tracker.uri}` "
        f"(settings `{digest}`).",
        "",
        "## Runs",
        "",
        "| # | run | status | MLflow run |",
        "|---|---|---|---|",
    ]
    for i, o in enumerate(outcomes, start=1):
        lines.append(f"| {i} | {o.item.key} | {o.status} | `{o.run_id or '-'}` |")
    # Runs with a row of the report's table go in it; every other run gets a section of its own.
    in_table = {rid for rid, run in runs.items() if run.data.tags.get(record.PAIR) and table_report.row_of(run)}
    alone = [(o, runs[o.run_id]) for o in outcomes if o.run_id and o.run_id not in in_table]
    for kind, heading in (("generate", "Generative models"), ("adapt", "Other runs")):
        mine = [(o, run) for o, run in alone if _kind(o.item.method) == kind]
        if mine:
            lines += ["", f"## {heading}", ""]
            for o, run in mine:
                lines += _run_section(o, run, tracker, out)
    if in_table:
        table = table_report.build("last", run_ids=in_table)
        pairs = list(dict.fromkeys(runs[o.run_id].data.tags.get(record.PAIR) for o in outcomes if o.run_id in in_table))
        table.pairs = [p for p in pairs if any(k[1] == p for k in table.cells)]
        lines += ["", "## Domain adaptation: target accuracy (%)", "", *table_report.markdown(table, out)]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    page = out / "report.html"
    page.write_text(to_html(lines, f"hw3 reproduce: {suite}"))
    return page


def _kind(method: str) -> str:
    from runner.runs.plugins import get_manager

    registered = get_manager().methods().get(method)
    return registered.obj.kind if registered else "adapt"


def _run_section(o: Any, run: Any, tracker: Any, out: Path) -> list[str]:
    """A run's headline metrics (as its method lists them) and its figures."""
    from runner.commands.report import report_figures
    from runner.progress import fmt_value
    from runner.runs.plugins import get_manager

    m = run.data.metrics
    registered = get_manager().methods().get(o.item.method)
    cls = registered.obj if registered else None
    labels = dict(cls.report_metrics) if cls else {}
    if cls and not labels:
        labels = {k: k for k in (cls.primary_metric, *cls.summary_metrics)}
    shown = [(label, fmt_value(k, m[k])) for k, label in labels.items() if k in m]
    lines = [f"### {o.item.key} (run `{run.info.run_id}`)", ""]
    if shown:
        lines += ["| " + " | ".join(label for label, _ in shown) + " |", "|---" * len(shown) + "|"]
        lines += ["| " + " | ".join(v for _, v in shown) + " |", ""]
    if cls and (note := cls.report_note(m)):
        lines += [note, ""]
    name = f"{o.item.method}-{o.item.where.replace(':', '-')}"
    for fig, local, _ in report_figures(tracker, run):
        target = out / f"{name}_{fig}"
        shutil.copyfile(local, target)
        lines += [f"![{o.item.method} {fig}]({target.name})", ""]
    return lines


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def to_html(lines: list[str], title: str) -> str:
    """The few Markdown forms the report uses (headings, tables, lists, images) as one HTML page."""
    body: list[str] = []
    table: list[list[str]] = []
    in_list = False

    def flush() -> None:
        nonlocal in_list
        if table:
            head, *rows = [r for r in table if not set("".join(r)) <= set("-: ")]
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append("</table>")
            table.clear()
        if in_list:
            body.append("</ul>")
            in_list = False

    for line in lines:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if line.startswith("- "):
            if not in_list:
                flush()
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{_inline(line[2:])}</li>")
            continue
        flush()
        if m := re.match(r"(#+) (.*)", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip()):
            body.append(f'<p><img src="{html.escape(m.group(2))}" alt="{html.escape(m.group(1))}"></p>')
        elif line.strip():
            body.append(f"<p>{_inline(line.rstrip())}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
