"""The GPU check's settings and state: the targets it compares against, its sizes (the real run's
and the dry run's), and `Check`: its clock, its folder, every stage's figures, and the time limit
each stage gets.

Time: `budget` is the planned end (the report pass is sized to it, optional stages run if it
allows); `deadline` is the hard end, where the watchdog (bench/gpu_proc.py) stops everything.
Each stage's hard limit (`Check.limit`) is its cap, and short enough that every later stage keeps
its least time (but not shorter than its own), and the check ends FINISH s before the deadline,
the grace to stop a stage's process included.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gpu_proc import STOP_GRACE, park_if_stopping, time_limit

# What the next GPU session compares against, printed beside the measured figures.
TARGET_STEP_MS = 1.0  # DANN's MNIST-sized training step at batch 64, as a default run computes
TARGET_QUICK_S = 15.0  # `hw3 run dann`: 30 epochs on embedded mnist:mnistm, wall clock
TARGET_REPORT_S = 600.0  # the whole default `hw3 reproduce --workers auto`

NETS = ("dann-mnist", "dann-svhn", "dcgan-64", "adamatch-mnist")  # bench/steps.py's names
# The stages in the order they run (report_all: the rest of the whole report, when it fits).
ORDER = ("data", "steps", "graphs", "syndigits_dann", "quick", "quick_graphs", "report", "report_all")
STAGES = ("steps", "graphs", "syndigits_dann", "quick", "quick_graphs", "report")  # what --skip takes
FINISH = 15.0  # seconds kept before the deadline for the table and removing the folder
START_MIN = 5.0  # a stage whose limit is shorter is not started
GRAPHS_MIN = 60.0  # stage 3 is left out with less than this (a compile and a capture take most of it)
QUICK_GRAPHS_MIN = 45.0  # the same for the quick start with cuda_graphs=true


@dataclass(frozen=True)
class Sizes:
    batches: tuple[int, ...]
    rounds: int  # timed rounds per setting, settings taking turns
    steps: int  # steps per round
    warmup: int
    budget: float  # seconds: the planned end of the whole check
    deadline: float  # seconds: its hard end (the watchdog)
    steps_budget: float  # past this many seconds, stage 2 measures only the first batch size
    graphs_budget: float  # the same for stage 3
    caps: dict[str, float] = field(default_factory=dict)  # each stage's longest time (hard)
    least: dict[str, float] = field(default_factory=dict)  # what a stage needs at least: kept for it
    run: tuple[str, ...] = ()  # --set for the quick start (stage 5)
    syn_run: tuple[str, ...] = ()  # --set for the syndigits DANN run (stage 4)
    report: tuple[str, ...] = ()  # --set for `hw3 reproduce`
    suite: str = "report"
    pool: int = 0  # processes rendering syndigits (0: the CPU cores less one; 1: in this process)
    report_min: float = 60  # the one-seed report pass runs at least this long before it is stopped
    busy: bool = False  # the busy-share pass of stage 2 even off CUDA, one profiled step each (its plumbing)


FULL = Sizes(
    (64, 256, 1024),
    rounds=5,
    steps=20,
    warmup=5,
    budget=450,
    deadline=540,
    steps_budget=60,
    graphs_budget=100,
    caps={"data": 60, "steps": 100, "graphs": 170, "syndigits_dann": 90, "quick": 90, "quick_graphs": 120},
    least={"data": 20, "steps": 30, "syndigits_dann": 30, "quick": 20, "report": 60},
)
DRY = Sizes(
    (4, 8, 16),
    rounds=1,
    steps=1,
    warmup=0,
    budget=80,
    deadline=170,  # generous: a busy machine stretches the dry run, and the test holds its time anyway
    steps_budget=1,  # the first batch size only: the SVHN-sized network takes 0.3-1 s a step on 2 CPU cores
    graphs_budget=0,
    caps={"data": 40, "steps": 60, "syndigits_dann": 60, "quick": 60, "quick_graphs": 60},
    least={"data": 5, "steps": 10, "syndigits_dann": 15, "quick": 10, "report": 30},
    run=("epochs=1", "train_subset=256", "test_subset=200", "tsne_points=0"),
    syn_run=("epochs=1", "train_subset=64", "test_subset=100", "tsne_points=0"),
    report=("epochs=1",),
    suite="dry",
    pool=1,  # on 2 cores, starting processes costs more than the 400 images
    report_min=30,
    busy=True,
)
# The dry run's registry: syndigits at a tiny size, and a suite of three one-epoch runs (two of
# them with the first seed) standing in for the report. No GAN: its quality evaluator trains a
# digit classifier first, 30 s on 2 CPU cores.
DRY_REGISTRY = """
[datasets.syndigits]
n_train = 300
n_test = 100

[suites.dry]
description = "the GPU check's dry run"
seeds = {seeds}

[[suites.dry.runs]]
method = "baseline"
pair = "mnist:mnistm"
set = {{ train_subset = 256, test_subset = 200, tsne_points = 0 }}

[[suites.dry.runs]]
method = "dann"
pair = "mnist:mnistm"
set = {{ seed = 0, train_subset = 128, test_subset = 200, tsne_points = 0 }}
"""


@dataclass
class Check:
    """The check's state: its clock, sizes, folder and every stage's figures for the table."""

    device: str
    sizes: Sizes
    work: Path
    dry: bool
    t0: float  # time.monotonic() when the check started
    skip: set[str] = field(default_factory=set)
    figures: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # stage -> when it started (s into the check)
    ended: set[str] = field(default_factory=set)
    collect: dict[str, Any] = field(default_factory=dict)  # stage -> what reads its figures if it is cut off
    stopped: bool = False  # the watchdog ended the check

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds to the planned end (the budget)."""
        return self.sizes.budget - self.elapsed()

    def until_deadline(self) -> float:
        return self.sizes.deadline - self.elapsed()

    def limit(self, key: str, grace: float = STOP_GRACE) -> float:
        """Stage `key`'s hard time limit in seconds: its cap, and short enough that every later
        stage keeps its least time (and its stopping grace), but never less than its own least
        time (the stages' order is their priority); and in any case short enough that the check
        ends FINISH s before its deadline, `grace` (the time to stop this stage's process) included."""
        later = ORDER[ORDER.index(key) + 1 :]
        reserve = sum(self.sizes.least[k] + STOP_GRACE for k in later if k in self.sizes.least and k not in self.skip)
        room = self.until_deadline() - grace - FINISH
        return min(self.sizes.caps.get(key, math.inf), max(self.sizes.least.get(key, 0.0), room - reserve), room)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def current(self) -> str:
        """The stage running now ("" between stages)."""
        return next((k for k in list(self.started) if k not in self.ended), "")  # list: read by the watchdog too

    @contextlib.contextmanager
    def stage(self, name: str, title: str, limit: float | None = None):
        """A stage's heading, its time, and any failure recorded (and the next stage run); with
        `limit`, a stage that runs in this process is stopped after that many seconds."""
        park_if_stopping()
        when = f"at {self.elapsed():.0f} s; budget {self.sizes.budget:.0f} s, deadline {self.sizes.deadline:.0f} s"
        print(f"\n== {title}  ({when})", flush=True)
        self.started[name] = self.elapsed()
        t0 = time.monotonic()
        try:
            with time_limit(limit) if limit is not None else contextlib.nullcontext():
                yield
        except Exception as exc:  # StageTimeout among them
            self.failed[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            traceback.print_exc(limit=6, file=sys.stdout)
            print(f"   FAILED: {self.failed[name]}", flush=True)
        park_if_stopping()
        self.ended.add(name)
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
