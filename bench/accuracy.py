"""Target accuracy of the adaptation methods and their bounds, with the default settings.

For each pair and method, runs `--seeds` seeds through the same code path as `hw3 run` (each run
lands in MLflow, so `hw3 report` can rebuild the table), then prints target accuracy as
mean ± std under two checkpoint protocols (the last epoch, and the IM validator that needs no
target labels) and the wall time per run.

    python bench/accuracy.py                                   # the full grid: slow on a CPU
    python bench/accuracy.py --pairs mnist:mnistm --seeds 0    # one seed on the embedded pair
    python bench/accuracy.py --methods dann,selfens --set epochs=5
    python bench/accuracy.py --rows "source only" --set augment=false
    python bench/accuracy.py --pairs mnistm:syndigits --rows ADDA --workers 2   # two runs at once

Runs go to MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db in this folder).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

from rich.console import Console

from runner.runs.execute import RunRequest, RunResult, execute

# (row label, method, extra settings)
ROWS = [
    ("source only", "baseline", [("train_on", "source")]),
    ("DANN", "dann", []),
    ("ADDA", "adda", []),
    ("self-ensembling", "selfens", []),
    ("AdaMatch", "adamatch", []),
    ("target only", "baseline", [("train_on", "target")]),
    ("target only (AdaMatch's recipe)", "adamatch", [("labels", "target")]),
]


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:5.1f} ± {std:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="mnist:mnistm,syndigits:mnistm,mnistm:syndigits")
    parser.add_argument("--methods", default="", help="comma-separated subset of baseline,dann,adda,selfens,adamatch")
    parser.add_argument("--rows", default="", help='comma-separated subset of the rows, such as "source only,DANN"')
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run (as hw3 run --set)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (their seconds are then each run's own)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = [tuple(item.split("=", 1)) for item in args.set]
    wanted = set(filter(None, args.methods.split(",")))
    labels = set(filter(None, args.rows.split(",")))
    rows = [r for r in ROWS if (not wanted or r[1] in wanted) and (not labels or r[0] in labels)]
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    quiet = Console(file=io.StringIO())
    planned = []  # (pair, row label, seed, request)
    for pair in args.pairs.split(","):
        for label, method, settings in rows:
            results.setdefault((label, pair), {"last": [], "im": [], "seconds": []})
            for seed in seeds:
                req = RunRequest(method, pair=pair, overrides=[*settings, *extra, ("seed", seed), ("tsne_points", 0)])
                planned.append((pair, label, seed, req))

    def record(i: int, result: RunResult, seconds: float) -> None:
        pair, label, seed, _ = planned[i]
        cell = results[(label, pair)]
        cell["seconds"].append(seconds)
        cell["last"].append(result.metrics["target_acc"])
        cell["im"].append(result.metrics.get("selected/im/target_acc", result.metrics["target_acc"]))
        print(
            f"{pair:18s} {label:16s} seed {seed}: target {100 * result.metrics['target_acc']:5.1f}%"
            f"  (IM-selected {100 * cell['im'][-1]:5.1f}%)  {seconds:6.1f} s  run {result.run_id}",
            flush=True,
        )

    if args.workers > 1:  # side by side, the cores split between them (accuracy, not timing)
        from runner.runs.pool import Job, RunWork, side_by_side

        def ended(i: int, outcome: Callable[[], RunResult]) -> None:
            result = outcome()
            record(i, result, sum(result.seconds.values()))

        side_by_side(
            [Job(RunWork(r), f"{p} {lab} seed {s}") for p, lab, s, r in planned], args.workers, Console(), ended
        )
    else:
        for i, (_, _, _, req) in enumerate(planned):
            t0 = time.perf_counter()
            result = execute(req, quiet)
            record(i, result, time.perf_counter() - t0)
    print(f"\ntarget accuracy (%), mean ± std over seeds {args.seeds}; wall time per run")
    print(f"{'pair':18s} {'method':16s} {'last epoch':>14s} {'IM-selected':>14s} {'s/run':>8s}")
    for (label, pair), cell in results.items():
        print(f"{pair:18s} {label:16s} {fmt(cell['last']):>14s} {fmt(cell['im']):>14s} "
              f"{statistics.fmean(cell['seconds']):8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
