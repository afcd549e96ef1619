"""The prepared GPU check (bench/gpu.sh) is a script nobody can run here for real: its dry run
takes every step on the CPU with tiny sizes, so a broken step shows up before a GPU is at hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_takes_every_step_and_prints_its_table(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,  # about a minute on an idle 2-core machine; far more on a busy one
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    table = out.stdout.split("workload")[1]
    rows = [line for line in table.splitlines()[1:] if line.strip() and not line.startswith(("hw3", "whole"))]
    assert [r.split("  ")[0] for r in rows] == ["DANN svhn:mnistm 32 px"] * 2 + ["DCGAN 32 px, 160 folder"] * 2
    for row in rows:
        seconds, images_per_s = row.split()[-4:-2]
        assert float(seconds) > 0 and float(images_per_s) > 0
    assert "hw3 reproduce (a two-run suite):" in out.stdout and "nan s" not in out.stdout
    assert not list(tmp_path.glob("hw3-gpu-*"))  # its temporary folder is removed
