"""The prepared GPU check (bench/gpu.sh) is a script nobody can run here for real: its dry run
takes every step on the CPU with tiny sizes, so a broken step shows up before a GPU is at hand."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAGES = [
    "1. data",
    "2. step times",
    "3. step times with CUDA graphs",
    "4. a default DANN run on syndigits:mnistm",
    "5. the quick start",
    "6. the quick start with cuda_graphs=true",
    "7. hw3 reproduce --workers auto, one seed",
]
ROWS = [
    "data: mnist + mnistm (hw3)",
    "data: syndigits",
    "DANN syndigits:mnistm, default",
    "quick start: hw3 run dann",
    "quick start, cuda_graphs=true",
    "report, one seed (--workers auto)",
    "report, whole suite",
    "default runs finish on cpu",
]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_gpu_check_dry_run_takes_every_stage_and_prints_its_table(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    cpu0, t0 = _cpu_seconds(), time.monotonic()
    out = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    wall, cpu = time.monotonic() - t0, _cpu_seconds() - cpu0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    text = out.stdout
    assert "FAILED" not in text and "Traceback" not in text, text[-3000:]

    for stage in STAGES:  # each stage ran (graph capture says why it is left out on the CPU)
        assert f"== {stage}" in text, stage
    assert "the parallel chunks are hw3's own build, image for image" in text
    assert "skipped: CUDA graphs need a CUDA device" in text
    # The busy-share pass (the profiler after every timing) ran in the step-time process.
    assert re.search(r"busy share .*profiled now\n(   \| .*\n)*   \| dcgan-64 +4 fp32 +-", text), text[-3000:]
    assert "   table| dann-mnist      4  " in text  # each stage's rows printed as it ends

    table = text.split("=" * 100)[-1]
    # The step-time table: each network at each batch size, fp32 and auto measured at the first.
    steps = {
        (m[1], int(m[2])): m[3] for m in re.finditer(r"^(dann-mnist|dann-svhn|dcgan-64) +(\d+)  (.*)$", table, re.M)
    }
    assert sorted({b for _, b in steps}) == [4, 8, 16] and len(steps) == 9, steps
    for net in ("dann-mnist", "dann-svhn", "dcgan-64"):
        fp32, graphs, auto = re.findall(r"\(budget\)|-|[\d.]+ ms", steps[(net, 4)])[:3]
        assert fp32.endswith(" ms") and float(fp32.split()[0]) > 0, steps[(net, 4)]
        assert auto.endswith(" ms") and graphs == "-", steps[(net, 4)]
    assert "<= 1.0 ms (auto)" in steps[("dann-mnist", 4)]

    for row in ROWS:  # every row of the stage table, with its figures
        line = next((ln for ln in table.splitlines() if ln.startswith(row)), None)
        assert line is not None, row
        if row.startswith(("data", "DANN", "quick start:", "report, one")):
            assert float(line[len(row) :].split()[0]) > 0, line
    assert re.search(r"^report, one seed \(--workers auto\) +\d+ +2 of 2 runs finished", table, re.M) or (
        "stopped at the budget" in table  # a very busy machine: the pass is stopped at the dry run's budget
    )
    assert re.search(r"^report, whole suite +~?\d+ +3 runs", table, re.M), table
    assert "baseline 1/1" in table or "baseline 2/2" in table

    reported = float(re.search(r"^whole check: (\d+) s \(CPU time (\d+) s\)", table, re.M)[1])
    # Under 90 s on an idle 2-core machine. Other work on the machine stretches the wall time but
    # hardly the CPU time the check's processes take, so the test holds either figure to it.
    assert min(wall, cpu) < 90, f"wall {wall:.0f} s, CPU {cpu:.0f} s"
    assert reported <= wall
    assert not list(tmp_path.glob("hw3-gpu-*"))  # its temporary folder is removed


def test_gpu_check_watchdog_kills_its_processes_and_has_the_last_word(tmp_path: Path) -> None:
    """At the deadline the watchdog kills the process group run_cli is waiting on, says its last
    words (the table) and ends the check with status 3; the main thread prints nothing more."""
    script = """
import sys, time
from bench.gpu_proc import Watchdog, run_cli
Watchdog(1.5, lambda: print("last words", flush=True), start=time.monotonic()).arm()
child = "import os, time; print('child', os.getpid(), flush=True); time.sleep(120)"
run_cli([sys.executable, "-c", child], timeout=120)
print("not reached", flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 3, out.stdout + out.stderr
    assert time.monotonic() - t0 < 30
    assert "deadline" in out.stdout and "last words" in out.stdout and "not reached" not in out.stdout
    pid = int(re.search(r"child (\d+)", out.stdout)[1])
    time.sleep(0.5)
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text()  # killed, whoever reaps it


def test_gpu_check_table_at_the_deadline_has_what_was_measured(capsys) -> None:
    """The watchdog's table: the figures the stage cut off had written (read whole or not at
    all), that stage's cells marked, the stages never reached marked so."""
    from bench.gpu_check import DRY, Check
    from bench.gpu_proc import read_json, write_json
    from bench.gpu_stages import read_step_rows
    from bench.gpu_table import at_deadline

    work = Path.cwd()
    check = Check("cpu", DRY, work, dry=True, t0=time.monotonic() - 30)
    check.figures.update(data_digits=1.0, auto_same=True)
    check.started.update(data=0.0, steps=5.0)
    check.ended.add("data")
    write_json(work / "steps.json", [{"net": "dann-mnist", "batch": 4, "setting": "fp32", "ms": 2.5, "busy": None}])
    (work / "half.json").write_text('[{"net": "dann-sv')  # a write cut off: never the figures
    assert read_json(work / "half.json", []) == []
    check.collect["steps"] = lambda: read_step_rows(check, work / "steps.json", False, "deadline")
    at_deadline(check)
    table = capsys.readouterr().out.split("=" * 100)[-1]
    assert re.search(r"^dann-mnist +4  2\.50 ms +\(not run\) +2\.50 ms", table, re.M), table
    assert re.search(r"^dann-svhn +4  \(deadline\)", table, re.M), table
    assert re.search(r"^quick start: hw3 run dann +- +not run: the deadline came first", table, re.M), table
    assert re.search(r"^data: mnist \+ mnistm \(hw3\) +1\.0 ", table, re.M), table
    assert "STOPPED at its 170 s deadline" in table
