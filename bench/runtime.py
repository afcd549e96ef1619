"""Where a `hw3 run` spends its wall time: before the first training step (imports, plugins, the
MLflow store, data), training, and after the last epoch (summary metrics, t-SNE, figures, the
logged model, exit).

Each command runs as a user runs it (`hw3 run ...`, a fresh process, in a temporary working
folder with its own mlflow.db; the dataset cache is the usual one, warm after the first run).
The time each output line arrives is recorded: the first step starts at the arrival of the
"epoch 1/N" line minus that epoch's own duration (its `time/epoch_s` metric), and the tail runs
from the last epoch's line to the process's exit.

    python bench/runtime.py                         # the quick command, 3 repeats (about a minute)
    python bench/runtime.py --default               # also a default `hw3 run dann` on mnist:mnistm
    python bench/runtime.py --default --syndigits   # and on syndigits:mnistm (many minutes)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK = ["run", "dann", "--epochs", "1", "--set", "train_subset=256"]


def timed_run(args: list[str]) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="hw3-runtime-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("HW3_LOAD_PLUGINS", None)
    hw3 = [sys.executable, "-c", "from runner.commands.cli import main; main()"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*hw3, *args], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    epochs: list[float] = []
    run_id = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - t0
        if line.startswith("epoch ") and "step" not in line.split()[2:3]:
            epochs.append(now)
        if line.startswith("run ") and " in experiment " in line:
            run_id = line.split()[1]
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not epochs:
        raise SystemExit(f"hw3 {' '.join(args)} failed (exit {proc.returncode})")
    from runner.store import reader

    first_epoch = reader(env["MLFLOW_TRACKING_URI"]).metric_history(run_id, "time/epoch_s")[0]
    return {
        "wall": wall,
        "before_first_step": epochs[0] - first_epoch,
        "training": epochs[-1] - (epochs[0] - first_epoch),
        "after_last_epoch": wall - epochs[-1],
    }


def report(label: str, args: list[str], repeats: int) -> None:
    runs = [timed_run(args) for _ in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
    spread = f" (each: {walls})" if repeats > 1 else ""
    print(f"{label}: hw3 {' '.join(args)}")
    print(
        f"  wall {med['wall']:.1f} s{spread}; before the first step {med['before_first_step']:.1f} s, training "
        f"{med['training']:.1f} s, after the last epoch {med['after_last_epoch']:.1f} s; dead time "
        f"{med['before_first_step'] + med['after_last_epoch']:.1f} s (median of {repeats})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default", action="store_true", help="also a default hw3 run dann on mnist:mnistm")
    parser.add_argument("--syndigits", action="store_true", help="also a default hw3 run dann on syndigits:mnistm")
    args = parser.parse_args()
    timed_run(QUICK)  # warm the dataset cache and the page cache first
    report("one epoch on 256 images (default t-SNE points)", QUICK, args.repeats)
    if args.default:
        report("default", ["run", "dann"], 1)
    if args.syndigits:
        report("default on the report's SVHN -> MNIST-M pair", ["run", "dann", "--pair", "syndigits:mnistm"], 1)


if __name__ == "__main__":
    main()
