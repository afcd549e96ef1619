"""The GPU check's stages 7 and 8: `hw3 reproduce --workers auto`, first with one seed (every
built-in method's default run among its runs), stopped at the budget if need be; then the rest of
the whole suite (the first seed's runs reused) only if its time, estimated from the first pass's
runs, fits. Each pass's wall time and each run's status and seconds (report.md, MLflow) land in
`check.figures`.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bench.gpu_check import DRY_REGISTRY, FINISH, Check
from bench.gpu_proc import Proc, run_cli, say
from bench.gpu_stages import hw3, sets

REPORT_GRACE = 20.0  # after Ctrl-C, hw3 reproduce ends its runs and writes its report


def suite_runs(check: Check) -> tuple[list[int], list[dict[str, Any]]]:
    """The suite's seeds and runs, as the whole (not one-seed) registry has them."""
    import tomllib

    from runner.config import registry_path

    if check.dry:
        raw = tomllib.loads(DRY_REGISTRY.format(seeds="[0, 1]"))
    else:
        raw = tomllib.loads(registry_path().read_text())
    suite = raw["suites"][check.sizes.suite]
    return list(suite.get("seeds", [])), list(suite["runs"])


def registry_file(check: Check, one_seed: bool) -> str:
    """The HW3_REGISTRY a pass runs with ("" for none): one seed, or the whole suite."""
    path = check.work / f"registry-{'one' if one_seed else 'all'}.toml"
    if check.dry:
        path.write_text(DRY_REGISTRY.format(seeds="[0]" if one_seed else "[0, 1]"))
    elif one_seed:
        path.write_text(f"[suites.{check.sizes.suite}]\nseeds = [0]\n")
    else:
        return ""
    return str(path)


def pass_timeout(check: Check, planned: float) -> float:
    """A pass's time limit: `planned`, and never so long that stopping it runs past the deadline."""
    return min(planned, check.until_deadline() - REPORT_GRACE - 10 - FINISH)


def report_pass(check: Check, one_seed: bool, timeout: float) -> dict[str, Any]:
    """One `hw3 reproduce`: its wall time and each item's status and seconds (report.md, MLflow)."""
    name = "one" if one_seed else "all"
    out = check.work / f"report-{name}"
    args = hw3("reproduce", check.sizes.suite, "--device", check.device, "--workers", "auto", "--out", str(out))
    args += sets(check.sizes.report)
    say("$ hw3 " + " ".join(args[3:]) + ("   (one seed)" if one_seed else "") + f"   (at most {timeout:.0f} s)")
    t0 = time.monotonic()
    stage, key = ("report", "report_one") if one_seed else ("report_all", "report_all")
    # Cut off by the deadline, what it finished is still read (by the watchdog, before the table).
    check.collect[stage] = lambda: check.figures.setdefault(
        key, pass_figures(check, out, Proc(-9, time.monotonic() - t0, [], True))
    )
    proc = run_cli(args, timeout=timeout, env={"HW3_REGISTRY": registry_file(check, one_seed)}, grace=REPORT_GRACE)
    return pass_figures(check, out, proc)


def pass_figures(check: Check, out: Any, proc: Proc) -> dict[str, Any]:
    items = []  # (key, status, run id) from the report's table of runs
    if (out / "report.md").exists():
        for line in (out / "report.md").read_text().splitlines():
            m = re.fullmatch(r"\| \d+ \| (.+?) \| (\w+) \| `?([-\w]+)`? \|", line.strip())
            if m:
                items.append((m.group(1), m.group(2), m.group(3)))
    try:
        seconds = run_seconds(check.sizes.suite)
    except Exception as exc:  # no seconds per run: the estimate falls back to the wall time
        say(f"could not read the runs' times from MLflow: {type(exc).__name__}: {exc}")
        seconds = {}
    if not items:  # stopped before its report was written: the runs MLflow has
        items = [(item, status, rid) for rid, (item, status, _) in seconds.items()]
    return {
        "wall": proc.wall,
        "rc": proc.rc,
        "timed_out": proc.timed_out,
        "items": items,
        "seconds": seconds,
        "tail": proc.tail,
    }


def run_seconds(suite: str) -> dict[str, tuple[str, str, float]]:
    """Each run of `suite` in this check's MLflow store: run id -> (item, status, seconds)."""
    import mlflow

    from runner import record

    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`{record.SUITE}` = '{suite}'", output_format="list"
    )
    return {
        r.info.run_id: (
            r.data.tags.get(record.SUITE_ITEM, ""),
            r.info.status,
            ((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000,
        )
        for r in runs
    }


def stage_report(check: Check) -> None:
    seeds, runs = suite_runs(check)
    multiple = [1 if "seed" in r.get("set", {}) else max(1, len(seeds)) for r in runs]
    n_all = sum(multiple)
    timeout = pass_timeout(check, max(check.sizes.report_min, check.left() - 15))
    first = report_pass(check, True, timeout)
    check.figures["report_one"] = first
    finished = [it for it in first["items"] if it[1] in ("FINISHED", "reused")]
    say(f"one seed: {len(finished)} of {len(runs)} runs finished in {first['wall']:.0f} s")
    # The whole suite's time, from this pass's runs: each run's seconds times its seeds there.
    secs = {rid: s for rid, (_, _, s) in first["seconds"].items()}
    done = [secs.get(rid, 0.0) for _, _, rid in first["items"]]
    if first["timed_out"] or len(done) != len(runs) or not sum(done):
        per_run = first["wall"] / max(1, len(finished))
        estimate = per_run * n_all
        how = f"{first['wall']:.0f} s for {len(finished)} runs, scaled to {n_all}"
    else:
        work_one, work_all = sum(done), sum(d * k for d, k in zip(done, multiple, strict=True))
        estimate = first["wall"] * work_all / work_one
        how = (
            f"one-seed pass {first['wall']:.0f} s x {work_all / work_one:.2f}, its runs' seconds with every "
            "seed over without"
        )
    check.figures["report_estimate"] = (estimate, how, n_all)
    say(f"the whole suite ({n_all} runs): about {estimate:.0f} s ({how})")
    if first["rc"] != 0 and not first["timed_out"] and not first["items"]:
        raise RuntimeError(f"hw3 reproduce exited with {first['rc']}: {first['tail'][-1] if first['tail'] else ''}")
    if n_all == len(runs) or first["timed_out"] or first["rc"] != 0:  # failed runs: the methods' row says which
        return
    rest = estimate - first["wall"]
    room = min(check.left() - 15, pass_timeout(check, check.until_deadline()))
    if room < 1.15 * rest:
        check.skipped["report_all"] = f"its other {n_all - len(runs)} runs need about {rest:.0f} s; {room:.0f} s left"
        say(f"the rest of the whole suite: not run ({check.skipped['report_all']})")
        return
    check.figures["report_rest_pending"] = True


def stage_report_rest(check: Check) -> None:
    second = report_pass(check, False, pass_timeout(check, max(30.0, check.left() - 10)))
    check.figures["report_all"] = second
    total = check.figures["report_one"]["wall"] + second["wall"]
    say(f"the rest: {second['wall']:.0f} s; the whole suite in two passes: {total:.0f} s")
    if second["rc"] != 0 and not second["timed_out"] and not second["items"]:
        raise RuntimeError(f"hw3 reproduce exited with {second['rc']}: {second['tail'][-1] if second['tail'] else ''}")
