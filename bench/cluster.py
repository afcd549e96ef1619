"""`hw3 reproduce` of a 6-run suite (source and target only on mnist:mnistm, seeds 0-2), two runs
at a time, on this machine's process pool against a Slurm job array (`--executor slurm`, one CPU
a task), each in a fresh folder and MLflow store; prints both wall times and their ratio.

    bash .ci/slurm                                  # a one-node cluster here (root), or any cluster:
    SLURM_CONF=/tmp/hw3-slurm/slurm.conf python bench/cluster.py [--epochs 2] [--slurm partition=debug]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
[suites.bench]
seeds = [0, 1, 2]
runs = [
    { method = "baseline", pair = "mnist:mnistm" },
    { method = "baseline", pair = "mnist:mnistm", set = { train_on = "target" } },
]
"""


def timed(args: list[str], folder: Path) -> float:
    (folder / "registry.toml").write_text(SUITE)
    env = {**os.environ, "HW3_REGISTRY": str(folder / "registry.toml"), "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", "reproduce", "bench", *args], cwd=folder, env=env,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"hw3 reproduce {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--slurm", action="append", default=[], help="more --slurm KEY=VALUE for the array")
    a = parser.parse_args()
    settings = [f"--set=epochs={a.epochs}", "--set=train_subset=512", "--set=test_subset=500", "--set=tsne_points=0"]
    rows = []
    for name, extra in (("local, --workers 2", ["--workers", "2"]),
                        ("slurm, 1 CPU a task", ["--executor", "slurm", "--slurm", "cpus=1",
                                                 *(f"--slurm={s}" for s in a.slurm)])):  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            rows.append((name, timed([*settings, *extra], Path(tmp))))
            print(f"{name:22s} {rows[-1][1]:7.1f} s for 6 runs", flush=True)
    print(f"\nslurm / local wall time: {rows[1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    main()
