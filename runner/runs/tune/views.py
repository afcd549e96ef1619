"""How a reality check is shown: a rich table, Markdown (tune.md), JSON (tune.json), the parent
run's metrics, and a scatter per validator of its score against target test accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.runs.tune.reality import ORACLE, RealityCheck, Verdict

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _short(text: str) -> str:
    """A trial's value as people read it (4 significant digits); the runs hold it in full."""
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _rho(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _gap(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


COLUMNS = [
    "validator",
    "its choice: target test acc",
    "trial",
    "oracle's choice",
    "defaults",
    "vs oracle",
    "Spearman",
    "says",
]


def cells(rc: RealityCheck, v: Verdict) -> list[str]:
    name = v.validator + (" (searched)" if v.validator == rc.select else "")
    trial = str(v.chosen.number) if v.chosen else "-"
    return [
        name,
        _pct(v.chosen_acc),
        trial,
        _pct(rc.oracle_acc),
        _pct(v.defaults_acc),
        _gap(v.gap),
        _rho(v.rho),
        v.says(),
    ]


def headline(rc: RealityCheck) -> str:
    pruned = len(rc.trials) - len(rc.finished)
    return (
        f"reality check: {len(rc.finished)} finished trials ({pruned} pruned, left out), target test accuracy (%) "
        f"of each validator's choice; best trial in hindsight {_pct(rc.best_acc)}"
    )


def _together(rc: RealityCheck) -> str:
    if not rc.study_level:
        return ""
    names = ", ".join(rc.study_level)
    return (
        f" {names} scored every finished trial's last epoch against the ensemble of all of them (while searching, "
        "TPE was told each trial's score against the trials finished before it; this table is the choice)."
    )


def rich_table(rc: RealityCheck) -> Any:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=headline(rc), title_justify="left", caption=_together(rc).strip() or None, caption_justify="left")
    for i, col in enumerate(COLUMNS):
        t.add_column(col, justify="left" if i in (0, len(COLUMNS) - 1) else "right", no_wrap=i == 0)
    for v in rc.verdicts:
        row = [escape(c) for c in cells(rc, v)]
        if "misleads" in row[-1]:
            row[-1] = f"[red]{row[-1]}"
        t.add_row(*row)
    return t


def markdown(rc: RealityCheck) -> str:
    lines = [
        f"# Reality check of tune `{rc.parent_run_id}`",
        "",
        headline(rc) + ". Each validator chooses among the finished trials by its own score, read at the epoch it "
        "picks; the oracle reads target validation labels. Spearman: rank correlation of the validator's score with "
        "target test accuracy over the finished trials." + _together(rc),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cells(rc, v)) + " |" for v in rc.verdicts]
    lines += [
        "",
        "## Trials",
        "",
        "| trial | values | " + " | ".join(rc.validators) + " | runs |",
        "|" + "---|" * (len(rc.validators) + 3),
    ]
    for t in rc.trials:
        state = " (pruned)" if t.pruned else (" (defaults)" if t.defaults else "")
        vals = ", ".join(f"{k}={_short(v)}" for k, v in t.values.items())
        accs = [f"{_pct(t.acc.get(n))}" for n in rc.validators]
        lines.append(f"| {t.number}{state} | {vals} | " + " | ".join(accs) + f" | {', '.join(t.runs)} |")
    lines += ["", "Trial cells: target test accuracy (%) at the epoch each validator chose."]
    return "\n".join(lines) + "\n"


def as_json(rc: RealityCheck) -> dict[str, Any]:
    return {
        "parent_run_id": rc.parent_run_id,
        "select": rc.select,
        "study_level": rc.study_level,
        "oracle_target_acc": rc.oracle_acc,
        "best_target_acc": rc.best_acc,
        "validators": [
            {
                "name": v.validator,
                "uses_target_labels": v.oracle,
                "chosen_trial": v.chosen.number if v.chosen else None,
                "chosen_target_acc": v.chosen_acc,
                "defaults_target_acc": v.defaults_acc,
                "vs_oracle_points": v.gap,
                "spearman": v.rho,
                "says": v.says(),
            }
            for v in rc.verdicts
        ],
        "trials": [
            {"number": t.number, "values": t.values, "defaults": t.defaults, "pruned": t.pruned, "runs": t.runs,
             "score": t.score, "target_acc": t.acc}
            for t in rc.trials
        ],
    }  # fmt: skip


def metrics(rc: RealityCheck) -> dict[str, float]:
    """What the parent run logs: each validator's chosen accuracy, gap and rho, and the counts."""
    out: dict[str, float] = {
        "tune/trials_finished": len(rc.finished),
        "tune/trials_pruned": len(rc.trials) - len(rc.finished),
    }
    if rc.oracle_acc is not None:
        out["tune/oracle_target_acc"] = rc.oracle_acc
    for v in rc.verdicts:
        for key, value in (("chosen_target_acc", v.chosen_acc), ("vs_oracle_points", v.gap), ("spearman", v.rho)):
            if value is not None:
                out[f"tune/{v.validator}/{key}"] = value
    return out


def figures(rc: RealityCheck) -> dict[str, Figure]:
    """A scatter per validator: its score against target test accuracy, one dot per finished
    trial, its choice, the oracle's and the defaults marked."""
    from matplotlib.figure import Figure

    out = {}
    done = rc.finished
    oracle_pick = next((v.chosen for v in rc.verdicts if v.validator == ORACLE), None)
    for v in rc.verdicts:
        have = [t for t in done if v.validator in t.score]
        if not have:
            continue
        fig = Figure(figsize=(5, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.scatter(
            [t.score[v.validator] for t in have],
            [100 * t.acc[v.validator] for t in have],
            s=22,
            c="0.45",
            label="trials",
        )
        marks = [
            (v.chosen, "*", "tab:red", 180, f"{v.validator}'s choice"),
            (oracle_pick, "D", "tab:green", 60, "oracle's choice"),
        ]
        marks.append((next((t for t in have if t.defaults), None), "s", "black", 50, "defaults"))
        for t, marker, color, size, label in marks:
            if t is not None and v.validator in t.score:
                ax.scatter(
                    [t.score[v.validator]],
                    [100 * t.acc[v.validator]],
                    marker=marker,
                    c=color,
                    s=size,
                    label=label,
                    zorder=3,
                )
        rho = f"Spearman {_rho(v.rho)}" if v.rho is not None else "too few trials for a rank correlation"
        ax.set(
            xlabel=f"{v.validator} score (larger is better)",
            ylabel=f"target test accuracy (%) at the epoch {v.validator} picks",
            title=f"{v.validator}: {rho}",
        )
        ax.legend(fontsize=7, loc="best")
        out[f"tune_{v.validator}.png"] = fig
    return out
