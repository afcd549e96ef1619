"""The GPU check: one prepared call on one GPU, each stage's figures printed as it goes, and a
table at the end with the targets beside the measured figures (PASS / FAIL).

Stages, in order (each guarded: a failure is a row of the table, and the rest still run):
1. data: hw3's own offline data into its cache. mnist and mnistm are embedded and built as any
   run builds them; syndigits (12,000 + 2,000 rendered digits) is rendered in parallel processes,
   chunk for chunk as hw3's own (threaded) build renders it, and saved where that build would;
   hw3's own build is timed on 4,250 images beside it.
2. steps: ms per training step and the GPU's busy share (torch.profiler: kernel time over wall
   time) of DANN's MNIST-sized and SVHN-sized networks and the 64-px DCGAN, at batch 64, 256 and
   1024, fp32 against `auto`, settings taking turns (bench/steps.py).
3. graphs: the same with each network captured as CUDA graphs (torch.compile, reduce-overhead),
   in a process of its own with a time limit (the compiles take the time).
4. syndigits DANN: a default `hw3 run dann --pair syndigits:mnistm` (7 epochs).
5. quick start: the wall time of the README's `hw3 run dann` (30 epochs, embedded mnist:mnistm).
6. report: `hw3 reproduce --workers auto` with one seed (17 runs, every built-in method's default
   run among them), stopped at the budget if need be.
7. the rest of the whole report (47 runs; the first seed's are reused), only if its time,
   estimated from the first pass's runs (each run's seconds times its seeds), fits the budget;
   else that estimate is what the table states.
8. the quick start with `cuda_graphs=true`, if 90 s of the budget are left.

    bash bench/gpu.sh              # on a GPU: at most about 7.5 minutes (--budget, default 450 s)
    bash bench/gpu.sh --dry-run    # the same plumbing on the CPU with tiny sizes, about a minute
    bash bench/gpu.sh --skip report,quick_graphs   # leave stages out (a second, shorter try)

Everything lands in a temporary folder (its own MLflow store, cache, data and compile caches)
that is removed unless --keep.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # hw3 and bench/steps.py from this checkout, installed or not

# What the next GPU session compares against, printed beside the measured figures.
TARGET_STEP_MS = 1.0  # DANN's MNIST-sized training step at batch 64, as a default run computes
TARGET_QUICK_S = 15.0  # `hw3 run dann`: 30 epochs on embedded mnist:mnistm, wall clock
TARGET_REPORT_S = 600.0  # the whole default `hw3 reproduce --workers auto`

NETS = ("dann-mnist", "dann-svhn", "dcgan-64")  # bench/steps.py's names
STAGES = ("steps", "graphs", "syndigits_dann", "quick", "report", "quick_graphs")  # what --skip takes


@dataclass(frozen=True)
class Sizes:
    batches: tuple[int, ...]
    rounds: int  # timed rounds per setting, settings taking turns
    steps: int  # steps per round
    warmup: int
    budget: float  # seconds for the whole check
    steps_budget: float  # start no new network and batch size in stage 2 after this
    graphs_budget: float  # the same for stage 3
    run: tuple[str, ...] = ()  # --set for the quick start (stage 5)
    syn_run: tuple[str, ...] = ()  # --set for the syndigits DANN run (stage 4)
    report: tuple[str, ...] = ()  # --set for `hw3 reproduce`
    suite: str = "report"
    pool: int = 0  # processes rendering syndigits (0: the CPU cores less one; 1: in this process)
    report_min: float = 60  # the one-seed report pass runs at least this long before it is stopped


FULL = Sizes((64, 256, 1024), rounds=5, steps=20, warmup=5, budget=450, steps_budget=100, graphs_budget=90)
DRY = Sizes(
    (4, 8, 16),
    rounds=1,
    steps=1,
    warmup=0,
    budget=80,
    steps_budget=10,  # the SVHN-sized network takes about a second a step on 2 CPU cores
    graphs_budget=0,
    run=("epochs=1", "train_subset=256", "test_subset=200", "tsne_points=0"),
    syn_run=("epochs=1", "train_subset=64", "test_subset=100", "tsne_points=0"),
    report=("epochs=1",),
    suite="dry",
    pool=1,  # on 2 cores, starting processes costs more than the 400 images
    report_min=30,
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
    t0: float = field(default_factory=time.perf_counter)
    figures: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.sizes.budget - self.elapsed()

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @contextlib.contextmanager
    def stage(self, name: str, title: str):
        """A stage's heading, its time, and any failure recorded (and the next stage run)."""
        print(f"\n== {title}  (at {self.elapsed():.0f} s of the {self.sizes.budget:.0f} s budget)", flush=True)
        t0 = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.failed[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            traceback.print_exc(limit=6, file=sys.stdout)
            print(f"   FAILED: {self.failed[name]}", flush=True)
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# Subprocesses: streamed, timed, stopped at their limit


@dataclass
class Proc:
    rc: int
    wall: float
    tail: list[str]
    timed_out: bool


def run_cli(args: list[str], timeout: float, env: dict[str, str] | None = None, show: bool = True) -> Proc:
    """Run `args` in a session of its own; its lines printed as they come (indented) when `show`;
    at `timeout` it gets Ctrl-C (hw3 ends its runs cleanly), and 20 s later SIGKILL."""
    full_env = {**os.environ, "COLUMNS": "160", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    p = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, start_new_session=True
    )
    tail: collections.deque[str] = collections.deque(maxlen=60)

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            tail.append(line.rstrip())
            if show:
                print(f"   | {line.rstrip()}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        p.wait(max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        say(f"stopping it at its {timeout:.0f} s limit")
        for sig, grace in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
    wall = time.perf_counter() - t0
    reader.join(5)
    return Proc(p.returncode if p.returncode is not None else -9, wall, list(tail), timed_out)


def hw3(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def sets(pairs: tuple[str, ...] | list[str]) -> list[str]:
    return [a for kv in pairs for a in ("--set", kv)]


# ---------------------------------------------------------------------------------------------
# 1. data


def _render_chunk(job: tuple[int, int]) -> tuple[Any, Any]:
    """One chunk of syndigits, as hw3's build renders it (numpy out: no torch tensors to pickle)."""
    from plugins.datasets.syndigits import render

    images, labels = render(*job)
    return images.numpy(), labels.numpy()


def syndigits_jobs(ctx: Any) -> dict[str, list[tuple[int, int]]]:
    """The (images, seed) chunks of plugins/datasets/syndigits.py's `build`, split by split."""
    from plugins.datasets.syndigits import DEFAULT_SIZES

    seed, step = int(ctx.option("seed", 0)), 250
    out = {}
    for k, split in enumerate(("train", "test")):
        n = int(ctx.option(f"n_{split}", DEFAULT_SIZES[split]))
        out[split] = [(min(step, n - start), seed * 1_000_003 + k * 100_003 + start) for start in range(0, n, step)]
    return out


def stage_data(check: Check) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from runner.cache import data_context, load_dataset
    from runner.config import load_registry
    from runner.datasets import Split
    from runner.plugins import get_manager

    manager, registry, dctx = get_manager(), load_registry(), data_context()

    def ctx_of(name: str) -> Any:
        return dctx.for_dataset(manager.dataset(name), registry.datasets.get(name))

    t0 = time.perf_counter()
    for name in ("mnist", "mnistm"):
        load_dataset(manager.dataset(name), ctx_of(name))
    check.figures["data_digits"] = time.perf_counter() - t0
    say(f"mnist and mnistm (embedded, built by hw3) in the cache in {check.figures['data_digits']:.1f} s")

    spec, ctx = manager.dataset("syndigits"), ctx_of("syndigits")
    jobs = syndigits_jobs(ctx)
    n = sum(size for chunks in jobs.values() for size, _ in chunks)
    # hw3's own build (threads: PIL lets go of the GIL for part of each image), timed on 4,250
    # images here; in the dry run on the whole tiny set, which the processes' chunks must equal.
    sample = (
        ctx
        if check.dry
        else dctx.for_dataset(spec, {**(registry.datasets.get("syndigits") or {}), "n_train": 4000, "n_test": 250})
    )
    t0 = time.perf_counter()
    own = spec.build(sample)
    own_rate = sum(len(split) for split in own.values()) / (time.perf_counter() - t0)
    workers = check.sizes.pool or max(1, (os.cpu_count() or 2) - 1)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        mapper: Any = map
        if workers > 1:  # spawned, not forked: this process holds CUDA and OpenMP threads
            spawn = multiprocessing.get_context("spawn")
            mapper = stack.enter_context(ProcessPoolExecutor(workers, mp_context=spawn)).map
        splits = {}
        for split, chunks in jobs.items():
            parts = list(mapper(_render_chunk, chunks))
            images = torch.cat([torch.from_numpy(x) for x, _ in parts])
            splits[split] = Split(images, torch.cat([torch.from_numpy(y) for _, y in parts]))
    took = time.perf_counter() - t0
    if check.dry:
        if not all(
            torch.equal(own[s].images, splits[s].images) and torch.equal(own[s].labels, splits[s].labels)
            for s in splits
        ):
            raise AssertionError("the processes' chunks differ from hw3's own syndigits build: update syndigits_jobs")
        say("the parallel chunks are hw3's own build, image for image")
    load_dataset(dataclasses.replace(spec, build=lambda _ctx: splits), ctx)  # checked and cached as hw3 does
    check.figures["data_syndigits"] = (n, workers, took, n / own_rate)
    where = f"{workers} processes" if workers > 1 else "this process"
    say(
        f"syndigits, {n:,} images: {took:.1f} s in {where}, {n / took:.0f} images/s; hw3's own threaded build "
        f"{own_rate:.0f} images/s (on {sum(len(x) for x in own.values()):,}), about {n / own_rate:.0f} s for these"
    )


# ---------------------------------------------------------------------------------------------
# 2 and 3. step times


def stage_steps(check: Check) -> None:
    import torch

    from bench import steps
    from runner.devices import Compute, choose_compute

    device = torch.device(check.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    auto = choose_compute(device, "auto", "auto", "auto")
    fp32 = Compute("fp32", False)
    same = (auto.precision, auto.channels_last) == ("fp32", False)
    check.figures["auto"] = auto.describe() + ("; its figures are fp32's, measured once" if same else "")
    say(f"auto chooses {check.figures['auto']}")
    check.figures["auto_same"] = same
    computes = {"fp32": fp32} if same else {"fp32": fp32, "auto": auto}
    table = check.figures.setdefault("steps", {})
    t0 = time.perf_counter()
    for batch in check.sizes.batches:  # batch-major, and every network's first batch size whatever the time
        for net in NETS:
            if batch != check.sizes.batches[0] and time.perf_counter() - t0 > check.sizes.steps_budget:
                table[(net, batch, "fp32")] = table[(net, batch, "auto")] = "budget"
                say(f"{net:<10} batch {batch:>4}: skipped, past the stage's {check.sizes.steps_budget:.0f} s")
                continue
            got = steps.measure(
                net,
                computes,
                device,
                batch_size=batch,
                rounds=check.sizes.rounds,
                steps=check.sizes.steps,
                warmup=check.sizes.warmup,
                busy=device.type == "cuda",
            )
            got.setdefault("auto", got["fp32"])
            for name, f in got.items():
                table[(net, batch, name)] = f
            say(f"{net:<10} batch {batch:>4}: " + "   ".join(f"{k} {_cell(v)}" for k, v in got.items()))


def stage_graphs(check: Check) -> None:
    import json

    if not check.cuda:
        check.skipped["graphs"] = "CUDA graphs need a CUDA device"
        say(f"skipped: {check.skipped['graphs']}")
        return
    grace = 40  # for the network and batch size in hand at the budget (a compile, a capture)
    budget = min(check.sizes.graphs_budget, check.left() - 240 - grace)  # stages 4-6 need about 4 minutes
    if budget < 20:
        check.skipped["graphs"] = f"not enough of the budget left ({check.left():.0f} s)"
        say(f"skipped: {check.skipped['graphs']}")
        return
    out = check.work / "graphs.json"
    args = [
        sys.executable,
        str(ROOT / "bench" / "steps.py"),
        "--device",
        check.device,
        "--only-graphs",
        "--settings",
        "fp32" if check.figures.get("auto_same", True) else "fp32,auto",
        "--nets",
        ",".join(NETS),
        "--batches",
        ",".join(map(str, check.sizes.batches)),
        "--rounds",
        str(check.sizes.rounds),
        "--steps",
        str(check.sizes.steps),
        "--json",
        str(out),
        "--budget",
        f"{budget:.0f}",
    ]
    proc = run_cli(args, timeout=budget + grace)
    table = check.figures.setdefault("steps", {})
    for row in json.loads(out.read_text()) if out.exists() else []:
        net, batch = row["net"], row["batch"]
        if row.get("skipped"):
            table[(net, batch, "fp32+graphs")] = table[(net, batch, "auto+graphs")] = "budget"
            continue
        table[(net, batch, row["setting"])] = row
        if check.figures.get("auto_same", True):
            table[(net, batch, "auto+graphs")] = row
    for net in NETS:  # what a process stopped at its limit never reached
        for batch in check.sizes.batches:
            for c in ("fp32+graphs", "auto+graphs"):
                table.setdefault((net, batch, c), "budget")
    if proc.rc != 0 and not proc.timed_out:
        raise RuntimeError(f"bench/steps.py --only-graphs exited with {proc.rc}: {proc.tail[-1] if proc.tail else ''}")
    if proc.timed_out:
        check.skipped["graphs"] = f"stopped at its {budget + grace:.0f} s limit; the cells left are marked"


def _cell(f: Any) -> str:
    if f is None:
        return "-"
    if f == "budget":
        return "(budget)"
    busy = "" if f.get("busy") is None else f" {100 * f['busy']:3.0f}%"
    flag = "!" if f.get("captured") is False else ""  # torch.compile made no graph: not captured
    return f"{f['ms']:.2f}{flag} ms{busy}"


# ---------------------------------------------------------------------------------------------
# 4. the default syndigits:mnistm DANN run, in this process


def stage_syndigits_dann(check: Check) -> None:
    from rich.console import Console

    from runner.run import RunRequest, execute

    overrides = [("device", check.device), *(tuple(kv.split("=", 1)) for kv in check.sizes.syn_run)]
    t0 = time.perf_counter()
    result = execute(RunRequest("dann", pair="syndigits:mnistm", overrides=overrides), Console(file=io.StringIO()))
    wall = time.perf_counter() - t0
    s = result.resolved.settings
    primary = result.primary_metric
    if check.cuda:
        import torch

        torch.cuda.empty_cache()  # what this process keeps cached, the report's processes can use
    check.figures["syndigits_dann"] = {
        "wall": wall,
        "status": result.status,
        "epochs": s.epochs,
        "steps": result.steps,
        "seconds": result.seconds,
        "metric": (primary, result.metrics.get(primary, float("nan"))),
    }
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    say(f"{result.status}: {s.epochs} epochs, {result.steps} steps in {wall:.1f} s ({phases})")
    say(f"{primary} {result.metrics.get(primary, float('nan')):.4g}; run {result.run_id}")


# ---------------------------------------------------------------------------------------------
# 5 and 8. the quick start's wall time, a process of its own as a user starts it


def quick_start(check: Check, key: str, extra: list[str], timeout: float) -> None:
    args = hw3("run", "dann", "--device", check.device, *sets(check.sizes.run), *extra)
    say("$ hw3 " + " ".join(args[3:]))
    proc = run_cli(args, timeout=timeout, show=False)
    found = next((ln for ln in proc.tail if re.search(r"acc .* after \d+ epochs", ln)), "")
    check.figures[key] = {"wall": proc.wall, "rc": proc.rc, "timed_out": proc.timed_out, "line": found.strip()}
    if proc.rc != 0:
        print("\n".join(f"   | {ln}" for ln in proc.tail[-15:]), flush=True)
        why = "stopped at its limit" if proc.timed_out else f"exit status {proc.rc}"
        raise RuntimeError(f"hw3 run dann: {why} after {proc.wall:.0f} s: {proc.tail[-1] if proc.tail else ''}")
    warm = "warm data cache and MLflow store" if "syndigits_dann" in check.figures else "warm data cache"
    if "cuda_graphs=true" in extra and "graphs" not in check.skipped:
        warm += ", compile cache from stage 3"
    say(f"{proc.wall:.1f} s wall, {warm}; {found.strip()}")


def stage_quick_graphs(check: Check) -> None:
    if not check.cuda:
        check.skipped["quick_graphs"] = "CUDA graphs need a CUDA device"
    elif check.left() < 90:
        check.skipped["quick_graphs"] = f"not enough of the budget left ({check.left():.0f} s)"
    else:
        quick_start(check, "quick_graphs", ["--set", "cuda_graphs=true"], timeout=min(150, check.left() - 20))
    if "quick_graphs" in check.skipped:
        say(f"skipped: {check.skipped['quick_graphs']}")


# ---------------------------------------------------------------------------------------------
# 6 and 7. hw3 reproduce


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


def report_pass(check: Check, one_seed: bool, timeout: float) -> dict[str, Any]:
    """One `hw3 reproduce`: its wall time and each item's status and seconds (report.md, MLflow)."""
    out = check.work / f"report-{'one' if one_seed else 'all'}"
    args = hw3(
        "reproduce",
        check.sizes.suite,
        "--device",
        check.device,
        "--workers",
        "auto",
        "--out",
        str(out),
        *sets(check.sizes.report),
    )
    say("$ hw3 " + " ".join(args[3:]) + ("   (one seed)" if one_seed else ""))
    proc = run_cli(args, timeout=timeout, env={"HW3_REGISTRY": registry_file(check, one_seed)})
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
    first = report_pass(check, True, timeout=max(check.sizes.report_min, check.left() - 15))
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
    if check.left() - 15 < 1.15 * rest:
        check.skipped["report_all"] = (
            f"its other {n_all - len(runs)} runs need about {rest:.0f} s; {check.left():.0f} s left"
        )
        say(f"the rest of the whole suite: not run ({check.skipped['report_all']})")
        return
    check.figures["report_rest_pending"] = True


def stage_report_rest(check: Check) -> None:
    second = report_pass(check, False, timeout=max(30.0, check.left() - 10))
    check.figures["report_all"] = second
    total = check.figures["report_one"]["wall"] + second["wall"]
    say(f"the rest: {second['wall']:.0f} s; the whole suite in two passes: {total:.0f} s")
    if second["rc"] != 0 and not second["timed_out"] and not second["items"]:
        raise RuntimeError(f"hw3 reproduce exited with {second['rc']}: {second['tail'][-1] if second['tail'] else ''}")


# ---------------------------------------------------------------------------------------------
# The table


def verdict(check: Check, ok: bool | None, estimated: bool = False) -> str:
    if check.dry:
        return "(dry run)"
    if ok is None:
        return "-"
    return ("PASS" if ok else "FAIL") + (" (est.)" if estimated else "")


def print_table(check: Check) -> None:
    sz, steps = check.sizes, check.figures.get("steps", {})
    print("\n" + "=" * 100)
    print(f"hw3 GPU check{' (dry run, CPU, tiny sizes)' if check.dry else ''}: {check.figures.get('device', '')}")
    print(f"auto: {check.figures.get('auto', '?')}")
    print("\nstep time: ms per training step and the GPU's busy share ('!': torch.compile made no graph)")
    cols = ("fp32", "fp32+graphs", "auto", "auto+graphs")
    print(f"{'network':<11} {'batch':>5}  " + "".join(f"{c:<17}" for c in cols) + "target")
    for net in NETS:
        for batch in sz.batches:
            cells = []
            for c in cols:
                f, stage = steps.get((net, batch, c)), "graphs" if "graphs" in c else "steps"
                cells.append(_cell(f) if f is not None else "FAILED" if stage in check.failed else "-")
            target = ""
            if net == "dann-mnist" and batch == sz.batches[0]:
                auto, graphs = steps.get((net, batch, "auto")), steps.get((net, batch, "auto+graphs"))
                ok = auto["ms"] <= TARGET_STEP_MS if isinstance(auto, dict) else None
                target = f"<= {TARGET_STEP_MS:.1f} ms (auto): {verdict(check, ok)}"
                if isinstance(graphs, dict):
                    target += f"; graphs: {verdict(check, graphs['ms'] <= TARGET_STEP_MS)}"
            print(f"{net:<11} {batch:>5}  " + "".join(f"{c:<17}" for c in cells) + target)

    print(f"\n{'stage':<34} {'seconds':>8}  {'figures':<58} {'target':<12} verdict")
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, key: str, secs: str, text: str, target: str = "", judged: str = "") -> None:
        if key in check.failed:
            text, judged = f"FAILED: {check.failed[key]}"[:90], judged and verdict(check, False)
        elif key in check.skipped and not text:
            text = f"skipped: {check.skipped[key]}"
        rows.append((name, secs, text, target, judged))

    fig = check.figures
    built = "embedded, built into the cache" if "data_digits" in fig else ""
    row("data: mnist + mnistm (hw3)", "data", _s(fig.get("data_digits")), built)
    if "data_syndigits" in fig:
        n, workers, took, own = fig["data_syndigits"]
        where = f"{workers} processes" if workers > 1 else "this process"
        row(
            "data: syndigits", "data", f"{took:.1f}", f"{n:,} images in {where}; hw3's own threads: ~{own:.0f} s (est.)"
        )
    else:
        row("data: syndigits", "data", "-", "")
    d = fig.get("syndigits_dann")
    text = ""
    if d:
        name, value = d["metric"]
        train = d["seconds"].get("train", float("nan"))
        text = f"{d['status']}, {d['epochs']} epochs, train {train:.1f} s, {name} {value:.3g}"
    row("DANN syndigits:mnistm, default", "syndigits_dann", _s(d and d["wall"]), text)
    q = fig.get("quick")
    ok = q and q["rc"] == 0 and q["wall"] < TARGET_QUICK_S
    row(
        "quick start: hw3 run dann",
        "quick",
        _s(q and q["wall"]),
        q["line"] if q else "",
        f"< {TARGET_QUICK_S:.0f} s",
        verdict(check, bool(ok)) if q else "-",
    )
    qg = fig.get("quick_graphs")
    row(
        "quick start, cuda_graphs=true",
        "quick_graphs",
        _s(qg and qg["wall"]),
        qg["line"] if qg else "",
        f"< {TARGET_QUICK_S:.0f} s",
        verdict(check, qg["rc"] == 0 and qg["wall"] < TARGET_QUICK_S) if qg else "-",
    )
    one = fig.get("report_one")
    if one:
        fin = sum(1 for it in one["items"] if it[1] in ("FINISHED", "reused"))
        cut = "; stopped at the budget" if one["timed_out"] else ""
        cut += f"; {len(one['items']) - fin} failed" if fin < len(one["items"]) and not one["timed_out"] else ""
        row(
            "report, one seed (--workers auto)",
            "report",
            f"{one['wall']:.0f}",
            f"{fin} of {len(one['items'])} runs finished{cut}",
        )
    else:
        row("report, one seed (--workers auto)", "report", "-", "")
    est = fig.get("report_estimate")
    if "report_all" in fig:
        total = one["wall"] + fig["report_all"]["wall"]
        row(
            "report, whole suite",
            "report_all",
            f"{total:.0f}",
            f"{est[2]} runs, measured in two passes (the first seed reused)",
            f"< {TARGET_REPORT_S:.0f} s",
            verdict(check, total < TARGET_REPORT_S),
        )
    elif est:
        row(
            "report, whole suite",
            "report_all",
            f"~{est[0]:.0f}",
            f"{est[2]} runs, estimated (below)",
            f"< {TARGET_REPORT_S:.0f} s",
            verdict(check, est[0] < TARGET_REPORT_S, estimated=True),
        )
    else:
        row("report, whole suite", "report", "-", "", f"< {TARGET_REPORT_S:.0f} s", "-")
    per_method = method_outcomes(check)
    if per_method:
        text = ", ".join(f"{m} {ok}/{n}" if n else f"{m} -" for m, (ok, n) in per_method.items())
        all_ok = all(ok == n and n > 0 for ok, n in per_method.values())
        row(f"default runs finish on {check.device}", "methods", "-", text, "every method", verdict(check, all_ok))
    else:
        row(f"default runs finish on {check.device}", "methods", "-", "", "every method", "-")
    for name, secs, text, target, judged in rows:
        print(f"{name:<34} {secs:>8}  {text:<58} {target:<12} {judged}")
    if est and "report_all" not in fig:
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
    print(f"\nwhole check: {check.elapsed():.0f} s (CPU time {cpu:.0f} s){failed}")


def method_outcomes(check: Check) -> dict[str, tuple[int, int]]:
    """Each built-in method's default runs in the report passes: (finished, runs); (0, 0) when
    the suite has none of that method."""
    from runner.plugins import get_manager

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


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the plumbing")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole check (default 450; dry 80)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated stages to leave out: " + ", ".join(STAGES) + " (report: both passes)",
    )
    parser.add_argument("--skip-reproduce", action="store_true", help="the same as --skip report")
    parser.add_argument("--pool", type=int, default=None, help="processes rendering syndigits (1: this process)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s} | ({"report"} if args.skip_reproduce else set())
    if skip - set(STAGES):
        parser.error(f"--skip {','.join(sorted(skip - set(STAGES)))}: stages are {', '.join(STAGES)}")
    if "report" in skip:
        skip.add("report_all")
    sizes = DRY if args.dry_run else FULL
    if args.budget:
        sizes = dataclasses.replace(sizes, budget=args.budget)
    if args.pool:
        sizes = dataclasses.replace(sizes, pool=args.pool)
    work = Path(tempfile.mkdtemp(prefix="hw3-gpu-"))
    check = Check(args.device or ("cpu" if args.dry_run else "cuda"), sizes, work, args.dry_run)
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        HW3_CACHE_DIR=str(work / "cache"),
        HW3_DATA_ROOT=str(work / "data"),
        TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"),  # shared by this check's processes, then removed
        TRITON_CACHE_DIR=str(work / "triton"),
        MPLCONFIGDIR=str(work / "matplotlib"),
    )
    if args.dry_run:
        os.environ["HW3_REGISTRY"] = registry_file(check, one_seed=False)
    os.chdir(work)
    try:
        import torch

        name = torch.cuda.get_device_name() if check.cuda else "cpu"
        check.figures["device"] = f"{name}, torch {torch.__version__}, {os.cpu_count()} CPU cores"
        print(f"hw3 GPU check on {check.figures['device']}{' (dry run)' if args.dry_run else ''}", flush=True)
        print(f"budget {sizes.budget:.0f} s; working in {work}", flush=True)
        with check.stage("data", "1. data: hw3's offline datasets into its cache"):
            stage_data(check)
        for key, title, run in (
            ("steps", "2. step times, fp32 and auto", stage_steps),
            ("graphs", "3. step times with CUDA graphs (a process of its own)", stage_graphs),
            ("syndigits_dann", "4. a default DANN run on syndigits:mnistm", stage_syndigits_dann),
            ("quick", "5. the quick start: hw3 run dann", lambda c: quick_start(c, "quick", [], timeout=120)),
            ("report", "6. hw3 reproduce --workers auto, one seed", stage_report),
            ("report_all", "7. the rest of the whole report (the first seed's runs reused)", stage_report_rest),
            ("quick_graphs", "8. the quick start with cuda_graphs=true", stage_quick_graphs),
        ):
            if key in skip:
                check.skipped[key] = "--skip"
            elif key != "report_all" or check.figures.get("report_rest_pending"):
                with check.stage(key, title):
                    run(check)
        print_table(check)
    finally:
        os.chdir("/")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
