"""One hw3 run in a process of its own, its figures written as JSON: the GPU check's stage 4 (a
default DANN run on syndigits:mnistm), run by bench/gpu.py with a time limit.

    python bench/gpu_run.py dann --pair syndigits:mnistm --set device=cuda --json out.json
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # hw3 and bench/ from this checkout, installed or not

from bench.gpu_proc import write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("--pair", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting (repeatable)")
    parser.add_argument("--json", type=Path, required=True, help="where its figures go")
    args = parser.parse_args()

    from rich.console import Console

    from runner.runs.execute import RunRequest, execute

    overrides = [tuple(kv.split("=", 1)) for kv in args.set]
    t0 = time.perf_counter()
    result = execute(RunRequest(args.method, pair=args.pair, overrides=overrides), Console(file=io.StringIO()))
    wall = time.perf_counter() - t0
    primary = result.primary_metric
    value = result.metrics.get(primary, float("nan"))
    write_json(
        args.json,
        {
            "wall": wall,
            "status": result.status,
            "epochs": result.resolved.settings.epochs,
            "steps": result.steps,
            "seconds": result.seconds,
            "metric": [primary, value],
            "run_id": result.run_id,
        },
    )
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"{result.status}: {result.resolved.settings.epochs} epochs, {result.steps} steps in {wall:.1f} s ({phases})")
    print(f"{primary} {value:.4g}; run {result.run_id}", flush=True)


if __name__ == "__main__":
    main()
