"""What hw3 asks of a Slurm scheduler outside a submission: which job this process runs in, and
which jobs are still queued or running. Both answer "" or "can't tell" where there is no Slurm."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def job_tag() -> str:
    """This process's Slurm job as squeue names it (`123`, or `123_4` for an array task); "" outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


def live_jobs(ids: Sequence[str]) -> set[str]:
    """Which of these job IDs (`123` or `123_4`) Slurm still holds, pending or running."""
    if not ids:
        return set()
    alive: set[str] = set()
    for array in sorted({i.split("_")[0] for i in ids}):  # one at a time: squeue refuses a list with a gone job
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", array], capture_output=True, text=True,
                                 timeout=60)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return set(ids)  # cannot tell: assume they go on
        if out.returncode == 0:  # non-zero: a job Slurm no longer knows
            alive.update(out.stdout.split())
    return alive
