"""The GPU check's stages 1-6: hw3's data into its cache (in this process), the step times without
and with CUDA graphs (bench/steps.py), a default DANN run on syndigits:mnistm (bench/gpu_run.py)
and the quick start without and with CUDA graphs (`hw3 run dann`), each of the last five in a
process of its own, stopped at the time limit `Check.limit` gives it. Each stage puts its figures
in `check.figures` for the table (bench/gpu_table.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu_check import GRAPHS_MIN, NETS, QUICK_GRAPHS_MIN, Check
from bench.gpu_proc import ROOT, read_json, run_cli, say


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
    from runner.runs.plugins import get_manager

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
# 2 and 3. step times, each stage a bench/steps.py process


def read_step_rows(check: Check, path: Path, graphs: bool, unreached: str | None = None) -> None:
    """bench/steps.py's figures into the step table; with `unreached` (it was stopped), the cells
    it never reached marked so."""
    table = check.figures.setdefault("steps", {})
    same = check.figures.get("auto_same", True)  # auto's figures are fp32's
    cols = ("fp32+graphs", "auto+graphs") if graphs else ("fp32", "auto")
    flagged = check.figures.setdefault("not_captured", set())  # said once each
    for row in read_json(path, []):
        net, batch = row["net"], row["batch"]
        if row.get("skipped"):
            for c in cols:
                table[(net, batch, c)] = "budget"
            continue
        table[(net, batch, row["setting"])] = row
        if same:
            table[(net, batch, row["setting"].replace("fp32", "auto"))] = row
        if row.get("captured") is False and (net, batch, row["setting"]) not in flagged:
            flagged.add((net, batch, row["setting"]))
            why = f"Inductor skipped {row['skips']} capture(s)" if row.get("skips") else "torch.compile made no graph"
            say(f"{net} batch {batch} {row['setting']}: NOT captured as CUDA graphs ({why})")
    for net in NETS if unreached else ():
        for batch in check.sizes.batches:
            for c in cols:
                table.setdefault((net, batch, c), unreached)


def steps_args(check: Check, out: Path, settings: str, budget: float) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "steps.py"),
        *("--device", check.device, "--settings", settings, "--nets", ",".join(NETS)),
        *("--batches", ",".join(map(str, check.sizes.batches))),
        *("--rounds", str(check.sizes.rounds), "--steps", str(check.sizes.steps)),
        *("--warmup", str(check.sizes.warmup), "--busy-steps", str(max(check.sizes.steps, 10))),
        *("--json", str(out), "--budget", f"{max(1.0, budget):.0f}"),
    ]


def stage_steps(check: Check) -> None:
    import torch

    from runner.devices import choose_compute

    auto = choose_compute(torch.device(check.device), "auto", "auto")  # as bench/steps.py chooses it
    same = (auto.precision, auto.channels_last) == ("fp32", False)
    check.figures["auto"] = auto.describe() + ("; its figures are fp32's, measured once" if same else "")
    check.figures["auto_same"] = same
    say(f"auto chooses {check.figures['auto']}")
    limit = check.limit("steps")
    out = check.work / "steps.json"
    # Past its soft budget it measures only the first batch size; at its limit it is stopped.
    args = steps_args(check, out, "fp32" if same else "fp32,auto", min(check.sizes.steps_budget, limit - 30))
    if check.sizes.busy and not check.cuda:  # the busy-share pass off CUDA: its profiler's plumbing, no figure
        args += ["--busy", "--busy-steps", "1"]
    run_steps(check, "steps", args, out, limit, graphs=False)


def run_steps(check: Check, stage: str, args: list[str], out: Path, limit: float, *, graphs: bool) -> None:
    """bench/steps.py in a process of its own, stopped at `limit`: its rows read as it ends, or
    whatever it had written if the deadline comes first."""
    check.collect[stage] = lambda: read_step_rows(check, out, graphs, "deadline")
    proc = run_cli(args, timeout=limit)
    read_step_rows(check, out, graphs, "limit" if proc.timed_out else None)
    if proc.rc != 0 and not proc.timed_out:
        what = "bench/steps.py" + (" --only-graphs" if graphs else "")
        raise RuntimeError(f"{what} exited with {proc.rc}: {proc.tail[-1] if proc.tail else ''}")
    if proc.timed_out:
        check.skipped[stage] = f"stopped at its {limit:.0f} s limit; the cells left are marked"


def stage_graphs(check: Check) -> None:
    if not check.cuda:
        check.skipped["graphs"] = "CUDA graphs need a CUDA device"
        say(f"skipped: {check.skipped['graphs']}")
        return
    limit = check.limit("graphs")
    if limit < GRAPHS_MIN:
        check.skipped["graphs"] = (
            f"only {max(0, limit):.0f} s for it once the later stages' least times are kept; "
            f"its compiles need {GRAPHS_MIN:.0f} s at least"
        )
        say(f"skipped: {check.skipped['graphs']}")
        return
    out = check.work / "graphs.json"
    settings = "fp32" if check.figures.get("auto_same", True) else "auto,fp32"  # auto: the headline's
    # Batch-major: batch 64 (the headline target's) for each network first, whatever the time;
    # past 45 s before its limit (a compile and a capture) no other batch size is started.
    args = [*steps_args(check, out, settings, min(check.sizes.graphs_budget, limit - 45)), "--only-graphs"]
    say(f"batch {check.sizes.batches[0]} for each network first; at most {limit:.0f} s")
    run_steps(check, "graphs", args, out, limit, graphs=True)


# ---------------------------------------------------------------------------------------------
# 4. the default syndigits:mnistm DANN run


def stage_syndigits_dann(check: Check) -> None:
    out = check.work / "syndigits-dann.json"
    args = [
        sys.executable,
        str(ROOT / "bench" / "gpu_run.py"),
        *("dann", "--pair", "syndigits:mnistm", "--json", str(out)),
        *sets([f"device={check.device}", *check.sizes.syn_run]),
    ]
    proc = run_cli(args, timeout=check.limit("syndigits_dann"))
    d = read_json(out, None)
    if d is not None:
        check.figures["syndigits_dann"] = {**d, "process": proc.wall}
    if proc.rc != 0 or d is None:
        why = "stopped at its limit" if proc.timed_out else f"exit status {proc.rc}"
        raise RuntimeError(f"bench/gpu_run.py: {why} after {proc.wall:.0f} s: {proc.tail[-1] if proc.tail else ''}")


# ---------------------------------------------------------------------------------------------
# 5 and 6. the quick start's wall time, a process of its own as a user starts it


def quick_start(check: Check, key: str, extra: list[str], timeout: float) -> None:
    args = hw3("run", "dann", "--device", check.device, *sets(check.sizes.run), *extra)
    say("$ hw3 " + " ".join(args[3:]) + f"   (at most {timeout:.0f} s)")
    proc = run_cli(args, timeout=timeout, show=False)
    found = next((ln for ln in proc.tail if re.search(r"acc .* after \d+ epochs", ln)), "")
    check.figures[key] = {"wall": proc.wall, "rc": proc.rc, "timed_out": proc.timed_out, "line": found.strip()}
    if proc.rc != 0:
        print("\n".join(f"   | {ln}" for ln in proc.tail[-15:]), flush=True)
        why = "stopped at its limit" if proc.timed_out else f"exit status {proc.rc}"
        raise RuntimeError(f"hw3 run dann: {why} after {proc.wall:.0f} s: {proc.tail[-1] if proc.tail else ''}")
    warm = "warm data cache and MLflow store" if "syndigits_dann" in check.figures else "warm data cache"
    if "cuda_graphs=true" in extra and "graphs" in check.ended and "graphs" not in check.skipped:
        warm += ", compile cache from stage 3"
    say(f"{proc.wall:.1f} s wall, {warm}; {found.strip()}")


def stage_quick(check: Check) -> None:
    quick_start(check, "quick", [], timeout=check.limit("quick"))


def stage_quick_graphs(check: Check) -> None:
    limit = check.limit("quick_graphs")
    if not check.cuda:
        check.skipped["quick_graphs"] = "CUDA graphs need a CUDA device"
    elif limit < QUICK_GRAPHS_MIN:
        check.skipped["quick_graphs"] = (
            f"only {max(0, limit):.0f} s for it once the report's least time is kept; it needs {QUICK_GRAPHS_MIN:.0f}"
        )
    else:
        quick_start(check, "quick_graphs", ["--set", "cuda_graphs=true"], timeout=limit)
    if "quick_graphs" in check.skipped:
        say(f"skipped: {check.skipped['quick_graphs']}")
