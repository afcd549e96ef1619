"""The GPU check's table: the step times (ms per training step and the GPU's busy share, with and
without CUDA graphs) and one row per stage, with the targets beside the measured figures and their
verdicts (PASS / FAIL). `print_progress` prints a stage's rows as it ends, so that output cut off
later still holds them; `print_table` prints the whole table at the end, or at the deadline (the
stages cut off or never reached marked so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.gpu_check import NETS, TARGET_QUICK_S, TARGET_REPORT_S, TARGET_STEP_MS, Check
from bench.gpu_proc import park_if_stopping

COLUMNS = ("fp32", "fp32+graphs", "auto", "auto+graphs")


@dataclass
class Row:
    stage: str  # the stage whose figures it shows
    name: str
    secs: str
    text: str
    target: str = ""
    judged: str = ""

    def __str__(self) -> str:
        return f"{self.name:<34} {self.secs:>8}  {self.text:<58} {self.target:<12} {self.judged}"


def verdict(check: Check, ok: bool | None, estimated: bool = False) -> str:
    if check.dry:
        return "(dry run)"
    if ok is None:
        return "-"
    return ("PASS" if ok else "FAIL") + (" (est.)" if estimated else "")


def cell(f: Any) -> str:
    """One step-table cell: ms per step (and busy share); '(budget)', '(limit)', '(deadline)' for
    one not measured for that reason; '!' for a setting with graphs whose networks were not captured."""
    if f is None:
        return "-"
    if isinstance(f, str):
        return f"({f})"
    busy = "" if f.get("busy") is None else f" {100 * f['busy']:3.0f}%"
    flag = "!" if f.get("captured") is False else ""
    return f"{f['ms']:.2f}{flag} ms{busy}"


def _not_run(check: Check, stage: str) -> str:
    """Why a stage has no figures when the watchdog ended the check ('' otherwise)."""
    if not check.stopped or stage in check.ended or stage in check.skipped:
        return ""
    return "stopped by the deadline" if stage in check.started else "not run: the deadline came first"


def step_lines(check: Check) -> list[str]:
    sz, steps = check.sizes, check.figures.get("steps", {})
    lines = [f"{'network':<11} {'batch':>5}  " + "".join(f"{c:<17}" for c in COLUMNS) + "target"]
    for net in NETS:
        for batch in sz.batches:
            cells = []
            for c in COLUMNS:
                f, stage = steps.get((net, batch, c)), "graphs" if "graphs" in c else "steps"
                if f is None and stage in check.failed:
                    f = "FAILED"
                elif f is None and _not_run(check, stage):
                    f = "deadline" if stage in check.started else "not run"
                cells.append(cell(f) if f != "FAILED" else f)
            target = ""
            if net == "dann-mnist" and batch == sz.batches[0]:
                auto, graphs = steps.get((net, batch, "auto")), steps.get((net, batch, "auto+graphs"))
                ok = auto["ms"] <= TARGET_STEP_MS if isinstance(auto, dict) else None
                target = f"<= {TARGET_STEP_MS:.1f} ms (auto): {verdict(check, ok)}"
                if isinstance(graphs, dict):
                    captured = graphs.get("captured") is not False
                    target += f"; graphs: {verdict(check, captured and graphs['ms'] <= TARGET_STEP_MS)}"
            lines.append(f"{net:<11} {batch:>5}  " + "".join(f"{c:<17}" for c in cells) + target)
    return lines


def stage_rows(check: Check) -> list[Row]:
    rows: list[Row] = []

    def row(stage: str, name: str, secs: str, text: str, target: str = "", judged: str = "") -> None:
        if stage in check.failed:
            text, judged = f"FAILED: {check.failed[stage]}"[:90], judged and verdict(check, False)
        elif stage in check.skipped and not text:
            text = f"skipped: {check.skipped[stage]}"
        elif not text:
            text = _not_run(check, stage)
        rows.append(Row(stage, name, secs, text, target, judged))

    fig = check.figures
    built = "embedded, built into the cache" if "data_digits" in fig else ""
    row("data", "data: mnist + mnistm (hw3)", _s(fig.get("data_digits")), built)
    if "data_syndigits" in fig:
        n, workers, took, own = fig["data_syndigits"]
        where = f"{workers} processes" if workers > 1 else "this process"
        text = f"{n:,} images in {where}; hw3's own threads: ~{own:.0f} s (est.)"
        row("data", "data: syndigits", f"{took:.1f}", text)
    else:
        row("data", "data: syndigits", "-", "")
    d = fig.get("syndigits_dann")
    text = ""
    if d:
        name, value = d["metric"]
        train = d["seconds"].get("train", float("nan"))
        text = f"{d['status']}, {d['epochs']} epochs, train {train:.1f} s, {name} {value:.3g}"
    row("syndigits_dann", "DANN syndigits:mnistm, default", _s(d and d["wall"]), text)
    for key, name in (("quick", "quick start: hw3 run dann"), ("quick_graphs", "quick start, cuda_graphs=true")):
        q = fig.get(key)
        ok = verdict(check, q["rc"] == 0 and q["wall"] < TARGET_QUICK_S) if q else "-"
        row(key, name, _s(q and q["wall"]), q["line"] if q else "", f"< {TARGET_QUICK_S:.0f} s", ok)
    one = fig.get("report_one")
    if one:
        fin = sum(1 for it in one["items"] if it[1] in ("FINISHED", "reused"))
        cut = "; stopped at the budget" if one["timed_out"] else ""
        cut += f"; {len(one['items']) - fin} failed" if fin < len(one["items"]) and not one["timed_out"] else ""
        text = f"{fin} of {len(one['items'])} runs finished{cut}"
        row("report", "report, one seed (--workers auto)", f"{one['wall']:.0f}", text)
    else:
        row("report", "report, one seed (--workers auto)", "-", "")
    est, target = fig.get("report_estimate"), f"< {TARGET_REPORT_S:.0f} s"
    if "report_all" in fig:
        total = one["wall"] + fig["report_all"]["wall"]
        text = f"{est[2]} runs, measured in two passes (the first seed reused)"
        row("report_all", "report, whole suite", f"{total:.0f}", text, target, verdict(check, total < TARGET_REPORT_S))
    elif est:
        ok = verdict(check, est[0] < TARGET_REPORT_S, estimated=True)
        row("report_all", "report, whole suite", f"~{est[0]:.0f}", f"{est[2]} runs, estimated (below)", target, ok)
    else:
        row("report", "report, whole suite", "-", "", target, "-")
    per_method = method_outcomes(check)
    name = f"default runs finish on {check.device}"
    if per_method:
        text = ", ".join(f"{m} {ok}/{n}" if n else f"{m} -" for m, (ok, n) in per_method.items())
        all_ok = all(ok == n and n > 0 for ok, n in per_method.values())
        row("report", name, "-", text, "every method", verdict(check, all_ok))
    else:
        row("report", name, "-", "", "every method", "-")
    return rows


def method_outcomes(check: Check) -> dict[str, tuple[int, int]]:
    """Each built-in method's default runs in the report passes: (finished, runs); (0, 0) when
    the suite has none of that method."""
    from runner.runs.plugins import get_manager

    latest: dict[str, str] = {}
    for key in ("report_one", "report_all"):
        for item, status, _ in check.figures.get(key, {}).get("items", []):
            latest[item] = status
    if not latest:
        return {}
    out = {m: (0, 0) for m in sorted(get_manager().methods())}
    for item, status in latest.items():
        m = item.split()[0]
        ok, n = out.get(m, (0, 0))
        out[m] = (ok + (status in ("FINISHED", "reused")), n + 1)
    return out


def print_progress(check: Check, stage: str) -> None:
    """The table's lines with `stage`'s figures, printed as it ends."""
    park_if_stopping()
    if stage in ("steps", "graphs"):
        if not any(("graphs" in c) == (stage == "graphs") for _, _, c in check.figures.get("steps", {})):
            return  # nothing measured (left out)
        lines = step_lines(check)
    else:
        report = ("report", "report_all")
        lines = [str(r) for r in stage_rows(check) if r.stage == stage or (stage in report and r.stage in report)]
    for line in lines:
        print(f"   table| {line}", flush=True)


def at_deadline(check: Check) -> None:
    """The watchdog's last words: what the process of the stage it cut off had written, then the
    table (the stages cut off or never reached marked so)."""
    check.stopped = True
    cut = check.current
    if cut in check.collect:
        try:
            check.collect[cut]()
        except Exception as exc:
            print(f"   (the figures of {cut} so far could not be read: {type(exc).__name__}: {exc})", flush=True)
    print_table(check)


def print_table(check: Check) -> None:
    park_if_stopping()  # in the main thread once the watchdog has fired: its table, not this one
    print("\n" + "=" * 100)
    print(f"hw3 GPU check{' (dry run, CPU, tiny sizes)' if check.dry else ''}: {check.figures.get('device', '')}")
    print(f"auto: {check.figures.get('auto', '?')}")
    print("\nstep time: ms per training step and the GPU's busy share (profiled without graphs only);")
    print("'!': not captured as CUDA graphs (torch.compile made no graph, or Inductor skipped the capture)")
    print("\n".join(step_lines(check)))
    print(f"\n{'stage':<34} {'seconds':>8}  {'figures':<58} {'target':<12} verdict")
    for r in stage_rows(check):
        print(r)
    est = check.figures.get("report_estimate")
    if est and "report_all" not in check.figures:
        print(f"   (the whole suite's estimate: {est[1]})")
    if "report_all" in check.skipped:
        print(f"   (the whole suite's other runs: not run, {check.skipped['report_all']})")
    import resource

    cpu = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    failed = f"; FAILED stages: {', '.join(check.failed)}" if check.failed else ""
    stopped = f"; STOPPED at its {check.sizes.deadline:.0f} s deadline" if check.stopped else ""
    print(f"\nwhole check: {check.elapsed():.0f} s (CPU time {cpu:.0f} s){failed}{stopped}", flush=True)


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
