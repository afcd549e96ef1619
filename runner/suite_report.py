"""The report folder of `hw3 reproduce`: Markdown and HTML with the suite's tables and figures,
every number and picture taken from the runs in MLflow."""

from __future__ import annotations

import datetime
import html
import re
import shutil
from pathlib import Path
from typing import Any

GENERATIVE_FIGURES = ("samples.png", "classes.png", "pairs.png", "losses.png")
QUALITY = (
    ("quality/fd", "Fréchet distance", "{:.2f}"),
    ("quality/kid", "KID", "{:.3f}"),
    ("quality/label_acc", "label accuracy", "{:.1%}"),
    ("quality/classifier_acc", "feature classifier accuracy", "{:.1%}"),
)


def write_report(suite: str, description: str, outcomes: list[Any], out: Path, digest: str) -> Path:
    """report.md and report.html in `out`, figures beside them; returns the HTML file."""
    from runner import report as adaptation
    from runner.tracking import Tracker

    tracker = Tracker()
    client = tracker.client
    out.mkdir(parents=True, exist_ok=True)
    runs = {o.run_id: client.get_run(o.run_id) for o in outcomes if o.run_id}
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
    generative = [(o, runs[o.run_id]) for o in outcomes if o.run_id and o.item.dataset]
    if generative:
        lines += ["", "## Generative models", ""]
        for o, run in generative:
            lines += _generative_section(o, run, client, out)
    adapt_ids = {o.run_id for o in outcomes if o.run_id and o.item.pair}
    if adapt_ids:
        table = adaptation.build("last", run_ids=adapt_ids)
        pairs = list(dict.fromkeys(o.item.pair for o in outcomes if o.item.pair))
        table.pairs = [p for p in pairs if any(k[1] == p for k in table.cells)]
        lines += ["", "## Domain adaptation: target accuracy (%)", "", *adaptation.markdown(table, out)]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    page = out / "report.html"
    page.write_text(to_html(lines, f"hw3 reproduce: {suite}"))
    return page


def _generative_section(o: Any, run: Any, client: Any, out: Path) -> list[str]:
    m = run.data.metrics
    name = f"{o.item.method}-{o.item.dataset}"
    lines = [f"### {o.item.key} (run `{run.info.run_id}`)", ""]
    shown = [(label, fmt.format(m[key])) for key, label, fmt in QUALITY if key in m]
    if shown:
        lines += ["| " + " | ".join(label for label, _ in shown) + " |", "|---" * len(shown) + "|"]
        lines += ["| " + " | ".join(value for _, value in shown) + " |", ""]
        if "quality/n_fake" in m:
            lines += [
                f"Measured on {m['quality/n_fake']:.0f} generated and {m['quality/n_real']:.0f} real training "
                "images in the features of a classifier trained on the real data.",
                "",
            ]
    for fig in GENERATIVE_FIGURES:
        try:
            local = client.download_artifacts(run.info.run_id, f"figures/{fig}")
        except Exception:
            continue
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
