"""Training throughput of hw3's engine against a bare PyTorch loop, and `hw3 run baseline` end to end.

Part 1, in this one process: images/second of `runner.engine.fit()` driving the built-in
`baseline` method's training step on the embedded mnist:mnistm pair, against a bare PyTorch loop
of the same network, the same Adam (same lr and weight decay, same cosine schedule), the same
batch size, the same uint8 tensors in memory (scaled to [-1, 1] per batch, as `BatchStream`
does) and the same number of steps. The two sides alternate (bare, engine, engine, bare, ...)
after a warm-up, and the median of each is reported, so drifting machine load does not favour
one side. Evaluation is left out of both (it is not training throughput; its cost per epoch is
reported on its own line), and so is MLflow: the engine writes to a `NullSink`.

Part 2, in a child process: the default `hw3 run baseline`, started in a temporary working
folder (its mlflow.db and checkpoints land there) with HW3_CACHE_DIR in a temporary folder too,
so the dataset cache is cold unless --warm-cache is given. It reports wall time, the child's
peak RSS, where the time went (from the time each output line arrived) and the target accuracy.

Run it from the repository root:

    .venv/bin/python bench/throughput.py              # full: about 75 s on 2 otherwise idle CPU cores
    .venv/bin/python bench/throughput.py --quick      # fewer steps and repeats, `--preset quick` CLI run
    .venv/bin/python bench/throughput.py --skip-cli   # part 1 only
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from plugins.methods.baseline import Baseline
from runner.config import ResolvedConfig
from runner.context import Domain, RunContext
from runner.devices import describe, pick_device
from runner.engine import fit, steps_per_epoch
from runner.runs.plan import RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.prepare import load_domains, make_context
from runner.seeding import seed_everything
from runner.sinks import NullSink

METHOD = "baseline"
NOISY_SPREAD = 1.5  # max / min of the per-repeat engine/bare ratios above which the summary warns (idle: 1.2-1.45)


class TrainOnlyBaseline(Baseline):
    """The built-in baseline, training step untouched; the per-epoch evaluation and the end-of-run
    figures and model are skipped. They are not training throughput, and the bare loop does none;
    evaluation's cost is timed apart."""

    def evaluate(self, ctx: Any) -> dict[str, float]:
        return {}

    def summarize(self, ctx: Any) -> dict[str, float]:
        return {}

    def figures(self, ctx: Any) -> dict[str, Any]:
        return {}

    def inference_model(self) -> None:
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Setup:
    """What both sides of part 1 share: the resolved config, the device and the data in memory."""

    resolved: ResolvedConfig
    device: torch.device
    domains: dict[str, Domain]
    checkpoint_dir: Path

    def context(self) -> RunContext:
        return make_context(self.resolved, self.domains, self.device, run_id="bench-engine")

    @property
    def steps(self) -> int:
        """Optimisation steps of one engine.fit() call: epochs x steps per epoch, counted as the engine does."""
        method = TrainOnlyBaseline(self.resolved.method_config)
        return self.resolved.settings.epochs * steps_per_epoch(method, self.context())

    @property
    def images_per_step(self) -> int:
        roles = TrainOnlyBaseline(self.resolved.method_config).train_domains()
        return self.resolved.settings.batch_size * len(roles)

    def fresh_method(self, ctx: RunContext, cls: type[Baseline] = TrainOnlyBaseline) -> Baseline:
        """A newly built, identically seeded baseline: network, Adam and cosine schedule (T_max = total steps)."""
        seed_everything(self.resolved.settings.seed)
        method = cls(self.resolved.method_config)
        ctx.steps_per_epoch = steps_per_epoch(method, ctx)
        method.setup(ctx)
        return method


def make_setup(epochs: int, device: str | None, checkpoint_dir: Path) -> Setup:
    """Config, device and data the way runner.runs.execute.execute builds them."""
    manager = get_manager()
    assert issubclass(TrainOnlyBaseline, manager.method(METHOD)), "the registered baseline is not plugins' Baseline"
    overrides: list[tuple[str, Any]] = [("epochs", epochs), ("checkpoint_dir", str(checkpoint_dir))]
    if device:
        overrides.append(("device", device))
    resolved = make_plan(RunRequest(METHOD, overrides=overrides), manager).resolved
    dev = pick_device(resolved.settings.device)
    domains = load_domains(resolved, manager, None, dev)
    return Setup(resolved, dev, domains, checkpoint_dir)


def time_engine(setup: Setup) -> float:
    """Seconds one engine.fit() call spent training over the configured epochs (the engine's own
    clock of its epochs' steps; setup, evaluation and the end-of-run work are apart)."""
    ctx = setup.context()
    method = TrainOnlyBaseline(setup.resolved.method_config)
    console = Console(file=io.StringIO())  # progress lines go nowhere
    gc.collect()
    # A NullSink: this measures the loop; MLflow's cost is part of the end-to-end run in part 2.
    elapsed = fit(method, ctx, NullSink(), console=console).seconds["train"]
    assert ctx.step == setup.steps, f"the engine took {ctx.step} steps, expected {setup.steps}"
    return elapsed


def time_bare(setup: Setup) -> float:
    """Seconds of a plain PyTorch loop over the same network, optimizer, schedule, batches and steps."""
    ctx = setup.context()
    method = setup.fresh_method(ctx)  # only builds the modules; the loop below is plain PyTorch
    net, opt, loss_fn = method.net, method.opt, method.loss
    sched = method.sched if method.config.lr_decay else None
    s = setup.resolved.settings
    splits = [setup.domains[role].train for role in method.train_domains()]
    gens = [torch.Generator().manual_seed(s.seed * 1000 + i + 1) for i in range(len(splits))]
    perms: list[torch.Tensor | None] = [None] * len(splits)
    pos = [0] * len(splits)
    bs = s.batch_size
    net.train()
    gc.collect()
    _sync(setup.device)
    t0 = time.perf_counter()
    for _ in range(setup.steps):
        xs, ys = [], []
        for k, split in enumerate(splits):
            n = len(split)
            if perms[k] is None or pos[k] + bs > n:  # reshuffle each pass, dropping the ragged tail
                perms[k] = torch.randperm(n, generator=gens[k]).to(split.images.device)
                pos[k] = 0
            idx = perms[k][pos[k] : pos[k] + bs]  # type: ignore[index]
            pos[k] += bs
            xs.append(split.images[idx].float().div_(127.5).sub_(1.0))
            ys.append(split.labels[idx])
        x, y = (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    _sync(setup.device)
    return time.perf_counter() - t0


def time_evaluate(setup: Setup, repeats: int = 3) -> float:
    """Median seconds of one epoch-end evaluation of the real baseline (both test splits)."""
    ctx = setup.context()
    method = setup.fresh_method(ctx, Baseline)
    times = []
    for _ in range(repeats):
        _sync(setup.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            method.evaluate(ctx)
        _sync(setup.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Throughput:
    engine: list[float] = field(default_factory=list)  # images/s, one per repeat
    bare: list[float] = field(default_factory=list)
    eval_s: float = 0.0

    @property
    def ratios(self) -> list[float]:
        return [e / b for e, b in zip(self.engine, self.bare, strict=True)]


def bench_throughput(setup: Setup, warmup: Setup, repeats: int, log: Callable[[str], None]) -> Throughput:
    res = Throughput()
    time_engine(warmup)  # warm-up: allocator, kernels, Adam's first steps, rich and signal set-up
    time_bare(warmup)
    images = setup.steps * setup.images_per_step
    for rep in range(repeats):
        # ABBA order (bare, engine, engine, bare, ...): neither side always runs right after the other.
        order = ("bare", "engine") if rep % 2 == 0 else ("engine", "bare")
        rate = {side: images / (time_engine(setup) if side == "engine" else time_bare(setup)) for side in order}
        res.engine.append(rate["engine"])
        res.bare.append(rate["bare"])
        log(
            f"  repeat {rep + 1}/{repeats}: engine {rate['engine']:6.0f} img/s   bare {rate['bare']:6.0f} img/s"
            f"   ratio {rate['engine'] / rate['bare']:.3f}"
        )
    res.eval_s = time_evaluate(setup)
    return res


# -- part 2: `hw3 run baseline` end to end ------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RESULT = re.compile(r"target acc\s+([0-9.]+)%\s+after\s+(\d+)\s+epochs?")
_EPOCH = re.compile(r"^epoch\s+(\d+)/(\d+)\s")


@dataclass
class CliRun:
    argv: list[str]
    cache: str  # "cold" or "warm"
    returncode: int = 0
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0
    target_acc: float | None = None
    epochs: int = 0
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)

    def first(self, pattern: re.Pattern[str]) -> float | None:
        return next((t for t, line in self.lines if pattern.search(line)), None)

    def last(self, pattern: re.Pattern[str]) -> float | None:
        return next((t for t, line in reversed(self.lines) if pattern.search(line)), None)


def run_cli(extra: list[str], cache_dir: Path | None) -> CliRun:
    """`hw3 run baseline` in a temporary folder; wall time, peak RSS and output lines with their arrival times."""
    exe = Path(sys.executable).with_name("hw3")
    with tempfile.TemporaryDirectory(prefix="hw3-bench-cli-") as work:
        cache = cache_dir or Path(work) / "cache"
        warm = cache.is_dir() and any(cache.iterdir())
        env = {**os.environ, "HW3_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)  # its mlflow.db must land in the temporary folder
        run = CliRun([str(exe), "run", METHOD, *extra], "warm" if warm else "cold")
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            run.argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            run.lines.append((time.perf_counter() - t0, _ANSI.sub("", line.rstrip("\n"))))
        proc.stdout.close()
        # wait4 gives this child's own rusage: the same figure as getrusage(RUSAGE_CHILDREN), which would be
        # the largest of all children this process ever waited for. ru_maxrss is the peak of the child or of
        # any descendant it waited for; KiB on Linux, bytes on macOS.
        _, status, usage = os.wait4(proc.pid, 0)
        run.wall_s = time.perf_counter() - t0
        run.returncode = proc.returncode = os.waitstatus_to_exitcode(status)
        run.peak_rss_mib = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    for _, line in run.lines:
        if m := _RESULT.search(line):
            run.target_acc, run.epochs = float(m.group(1)), int(m.group(2))
    return run


def cli_steps_per_epoch(setup: Setup, preset: str | None) -> int:
    """Steps per epoch of the CLI run: its train_subset (a preset may set one) applied to part 1's data."""
    s = make_plan(RunRequest(METHOD, preset=preset), get_manager()).resolved.settings
    sizes = [len(setup.domains[role].train) for role in TrainOnlyBaseline(setup.resolved.method_config).train_domains()]
    return max(min(n, s.train_subset) if s.train_subset > 0 else n for n in sizes) // s.batch_size


def cli_phases(run: CliRun, steps_per_epoch: int, images_per_step: int) -> list[str]:
    """Where the wall time went, from when the run's header, epoch and result lines arrived."""
    header = run.first(re.compile(rf"^{METHOD} on "))
    last_epoch = run.last(_EPOCH)
    result = run.first(_RESULT)
    if header is None or last_epoch is None or result is None:
        return []
    train_s = last_epoch - header
    rate = run.epochs * steps_per_epoch * images_per_step / train_s if run.epochs and train_s > 0 else 0.0
    return [
        f"start-up, data, MLflow run  {header:6.1f} s  (imports, plan, dataset cache, sqlite store)",
        f"training + per-epoch eval   {train_s:6.1f} s  ({rate:.0f} img/s incl. setup, eval, checkpoints, MLflow)",
        f"figures + model logging     {result - last_epoch:6.1f} s",
        f"exit after the last line    {run.wall_s - result:6.1f} s  (mostly interpreter teardown)",
    ]


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 repeats instead of 8, CLI run with --preset quick")
    ap.add_argument("--skip-cli", action="store_true", help="skip part 2 (the `hw3 run baseline` subprocess)")
    ap.add_argument("--repeats", type=int, help="alternating repeats of each side (default 8; --quick 4)")
    ap.add_argument("--epochs", type=int, help="epochs (of 62 steps) per timed run (default 1)")
    ap.add_argument("--device", help="run setting `device` for both parts (default: the registry's, auto)")
    ap.add_argument("--warm-cache", action="store_true", help="give the CLI run part 1's filled dataset cache")
    args = ap.parse_args(argv)
    repeats = args.repeats or (4 if args.quick else 8)
    epochs = args.epochs or 1

    def log(msg: str) -> None:
        print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="hw3-bench-") as tmp:
        root = Path(tmp)
        os.environ["HW3_CACHE_DIR"] = str(root / "cache")  # part 1's datasets: decoded here, not in ~/.cache
        t0 = time.perf_counter()
        setup = make_setup(epochs, args.device, root / "checkpoints")
        warmup = setup if epochs == 1 else make_setup(1, args.device, root / "checkpoints")
        s = setup.resolved.settings
        log(
            f"part 1: {METHOD} on {setup.resolved.pair}, device {describe(setup.device)}, torch {torch.__version__}; "
            f"data ready in {time.perf_counter() - t0:.1f} s (cold cache)"
        )
        log(
            f"  {setup.steps} steps per timed run ({epochs} epoch(s) x {setup.steps // epochs}), batch {s.batch_size}, "
            f"{setup.images_per_step} images/step; warm-up, then {repeats} alternating repeats"
        )
        load_before = os.getloadavg()[0]
        tp = bench_throughput(setup, warmup, repeats, log)
        load_after = os.getloadavg()[0]

        cli: CliRun | None = None
        if not args.skip_cli:
            extra = ["--preset", "quick"] if args.quick else []
            if args.device:
                extra += ["--device", args.device]
            log(f"part 2: {' '.join(['hw3', 'run', METHOD, *extra])} in a temporary folder ...")
            cli = run_cli(extra, root / "cache" if args.warm_cache else None)
            cli_spe = cli_steps_per_epoch(setup, "quick" if args.quick else None)
            if cli.returncode != 0:
                log(f"  hw3 exited with {cli.returncode}; its last lines:")
                for _, line in cli.lines[-15:]:
                    log(f"    {line}")

    engine_med, bare_med = statistics.median(tp.engine), statistics.median(tp.bare)
    ratio = statistics.median(tp.ratios)
    overhead_ms = (1 / engine_med - 1 / bare_med) * setup.images_per_step * 1000
    print()
    print("summary")
    print(f"  engine   {engine_med:6.0f} img/s   (best {max(tp.engine):.0f})")
    print(f"  bare     {bare_med:6.0f} img/s   (best {max(tp.bare):.0f})")
    print(f"  ratio    {engine_med / bare_med:.3f} (engine / bare, median of {repeats} alternating repeats)")
    print(
        f"           per-repeat ratios: median {ratio:.3f}, range {min(tp.ratios):.3f}-{max(tp.ratios):.3f}; "
        f"best / best {max(tp.engine) / max(tp.bare):.3f}"
    )
    print(f"  engine overhead {overhead_ms:+.2f} ms/step; not in img/s: evaluate {tp.eval_s * 1000:.0f} ms per epoch")
    print(
        f"  1-min load average {load_before:.2f} before part 1, {load_after:.2f} after ({os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads; a load above that means other processes shared the cores)"
    )
    spread = max(tp.ratios) / min(tp.ratios)
    if spread > NOISY_SPREAD:
        print(
            f"  WARNING: the per-repeat ratios differ by a factor {spread:.2f}: other processes were using the CPUs;\n"
            "           the medians are unreliable: trust the best-of figures more, or rerun on an idle machine"
        )
    if cli is not None:
        what = " ".join(["hw3 run", METHOD, *cli.argv[3:]])
        acc = f"target acc {cli.target_acc:.1f}%" if cli.target_acc is not None else "target acc not found"
        status = "" if cli.returncode == 0 else f", exit code {cli.returncode}"
        print(
            f"  {what}: {cli.wall_s:.1f} s wall, {cli.peak_rss_mib:.0f} MiB peak RSS, {acc} "
            f"({cli.epochs} epoch{'' if cli.epochs == 1 else 's'}, {cli.cache} dataset cache{status})"
        )
        for line in cli_phases(cli, cli_spe, setup.images_per_step):
            print(f"    {line}")
    return 0 if cli is None or cli.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
