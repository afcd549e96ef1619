"""The GPU check: one prepared call on one GPU, each stage's figures printed as it ends, and a
table at the end with the targets beside the measured figures (PASS / FAIL).

Stages, in order (each guarded: a failure is a row of the table, and the rest still run):
1. data: hw3's own offline data into its cache. mnist and mnistm are embedded and built as any
   run builds them; syndigits (12,000 + 2,000 rendered digits) is rendered in parallel processes,
   chunk for chunk as hw3's own (threaded) build renders it, and saved where that build would;
   hw3's own build is timed on 4,250 images beside it.
2. steps: ms per training step of DANN's MNIST-sized and SVHN-sized networks and the 64-px DCGAN,
   at batch 64, 256 and 1024, fp32 against `auto`, settings taking turns; then the GPU's busy
   share of each (torch.profiler: kernel time over wall time), profiled after every timing.
3. graphs: the same with each network captured as CUDA graphs (torch.compile, reduce-overhead):
   batch 64, the headline target's, for each network first, then the other batch sizes while its
   budget lasts; a cell whose capture Inductor skipped is flagged. Left out with under a minute.
4. syndigits DANN: a default `hw3 run dann --pair syndigits:mnistm` (7 epochs).
5. quick start: the wall time of the README's `hw3 run dann` (30 epochs, embedded mnist:mnistm).
6. the quick start with `cuda_graphs=true`.
7. report: `hw3 reproduce --workers auto` with one seed (17 runs, every built-in method's default
   run among them), stopped at the budget if need be.
8. the rest of the whole report (47 runs; the first seed's are reused), only if its time,
   estimated from the first pass's runs (each run's seconds times its seeds), fits the budget;
   else that estimate is what the table states.
Stage 1 runs in this process, the others each in a process of their own, each with a time limit.

Time: the stages are planned to end by --budget (default 450 s). --deadline (default 540 s) is
the hard end: there a watchdog kills every process, prints the table with what was measured so
far (the stages cut off or never reached marked so) and ends the check (exit status 3).

    bash bench/gpu.sh              # on a GPU: about 7.5 minutes, 9 at the very most
    bash bench/gpu.sh --dry-run    # the same plumbing on the CPU with tiny sizes, about a minute
    bash bench/gpu.sh --skip report,quick_graphs   # leave stages out (a second, shorter try)

Everything lands in a temporary folder (its own MLflow store, cache, data and compile caches)
that is removed unless --keep. The parts: bench/gpu_check.py (sizes, state, time limits),
bench/gpu_proc.py (processes, watchdog), bench/gpu_stages.py (stages 1-6), bench/gpu_report.py
(stages 7-8), bench/gpu_table.py (the table), bench/gpu_run.py (stage 4's process).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # hw3 and bench/ from this checkout, installed or not

from bench import gpu_report, gpu_stages  # noqa: E402
from bench.gpu_check import DRY, FULL, STAGES, START_MIN, Check  # noqa: E402
from bench.gpu_proc import STOP_GRACE, Watchdog, say  # noqa: E402
from bench.gpu_table import at_deadline, print_progress, print_table  # noqa: E402

RUN = (
    ("data", "1. data: hw3's offline datasets into its cache", gpu_stages.stage_data),
    ("steps", "2. step times, fp32 and auto (a process of its own)", gpu_stages.stage_steps),
    ("graphs", "3. step times with CUDA graphs (a process of its own)", gpu_stages.stage_graphs),
    ("syndigits_dann", "4. a default DANN run on syndigits:mnistm", gpu_stages.stage_syndigits_dann),
    ("quick", "5. the quick start: hw3 run dann", gpu_stages.stage_quick),
    ("quick_graphs", "6. the quick start with cuda_graphs=true", gpu_stages.stage_quick_graphs),
    ("report", "7. hw3 reproduce --workers auto, one seed", gpu_report.stage_report),
    ("report_all", "8. the rest of the whole report (the first seed's runs reused)", gpu_report.stage_report_rest),
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the plumbing")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--budget", type=float, default=None, help="seconds the stages plan to (default 450; dry 80)")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds to the hard end, the watchdog's (default 540; dry 170)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated stages to leave out: " + ", ".join(STAGES) + " (report: both passes)",
    )
    parser.add_argument("--skip-reproduce", action="store_true", help="the same as --skip report")
    parser.add_argument("--pool", type=int, default=None, help="processes rendering syndigits (1: this process)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    args.skip = {s for s in args.skip.split(",") if s} | ({"report"} if args.skip_reproduce else set())
    if args.skip - set(STAGES):
        parser.error(f"--skip {','.join(sorted(args.skip - set(STAGES)))}: stages are {', '.join(STAGES)}")
    if "report" in args.skip:
        args.skip.add("report_all")
    return args


def main() -> None:
    start = time.monotonic()  # the deadline counts from here
    args = parse()
    sizes = DRY if args.dry_run else FULL
    changes = {"budget": args.budget, "deadline": args.deadline, "pool": args.pool}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v})
    work = Path(tempfile.mkdtemp(prefix="hw3-gpu-"))
    device = args.device or ("cpu" if args.dry_run else "cuda")
    check = Check(device, sizes, work, args.dry_run, t0=start, skip=args.skip)

    def cleanup() -> None:
        os.chdir("/")
        if args.keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    def last_words() -> None:  # the watchdog's, at the deadline: the table with what was measured
        at_deadline(check)
        cleanup()

    watchdog = Watchdog(sizes.deadline, last_words, start=start).arm()
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        HW3_CACHE_DIR=str(work / "cache"),
        HW3_DATA_ROOT=str(work / "data"),
        TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"),  # shared by this check's processes, then removed
        TRITON_CACHE_DIR=str(work / "triton"),
        MPLCONFIGDIR=str(work / "matplotlib"),
    )
    if args.dry_run:
        os.environ["HW3_REGISTRY"] = gpu_report.registry_file(check, one_seed=False)
    os.chdir(work)
    try:
        import torch

        name = torch.cuda.get_device_name() if check.cuda else "cpu"
        check.figures["device"] = f"{name}, torch {torch.__version__}, {os.cpu_count()} CPU cores"
        print(f"hw3 GPU check on {check.figures['device']}{' (dry run)' if args.dry_run else ''}", flush=True)
        print(f"budget {sizes.budget:.0f} s, deadline {sizes.deadline:.0f} s; working in {work}", flush=True)
        for key, title, run in RUN:
            if key in args.skip:
                check.skipped[key] = "--skip"
            elif key != "report_all" or check.figures.get("report_rest_pending"):
                # With under START_MIN s of limit a stage is not started. Stage 1 runs in this
                # process, where its limit interrupts it; the others pass theirs to their process.
                limit = check.limit(key, grace=0 if key == "data" else STOP_GRACE)
                with check.stage(key, title, limit if key == "data" and limit >= START_MIN else None):
                    if limit < START_MIN:
                        check.skipped[key] = f"not started: only {max(0, limit):.0f} s for it before the deadline"
                        say(f"skipped: {check.skipped[key]}")
                    else:
                        run(check)
                print_progress(check, key)
        watchdog.disarm()
        print_table(check)
    finally:
        watchdog.disarm()
        cleanup()
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
