"""`hw3 tune` end to end, timed: the search, then the reality check of every validator.

Runs the command in a folder of its own (its mlflow.db and optuna.db), prints its wall time and,
from the parent run's tune.json, each validator's choice against the oracle's and the defaults.
Run it on idle cores, one at a time.

    python bench/tune.py                                   # DANN on mnist:mnistm, 24 trials, 2 workers
    python bench/tune.py --preset syndigits                # DANN on syndigits:mnistm, 6 trials
    python bench/tune.py --preset adda-mnistm-syndigits    # ADDA's adaptation stage on mnistm:syndigits
    python bench/tune.py --preset adamatch                 # AdaMatch on mnist:mnistm, 8 trials, by EnsV
    python bench/tune.py --preset adamatch-syndigits       # AdaMatch on syndigits:mnistm, 6 trials, by EnsV
    python bench/tune.py --dir runs/t1 -- dann --space lr=1e-4..1e-2:log --trials 4   # any hw3 tune arguments
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# What the issue that asked for `hw3 tune` measures.
PRESETS = {
    "mnist": [
        "dann", "--pair", "mnist:mnistm", "--space", "lr=1e-4..1e-2:log", "--space", "dropout=0..0.7",
        "--space", "grl_weight=0.1..1", "--trials", "24", "--select", "im", "--workers", "2",
    ],
    "syndigits": [
        "dann", "--pair", "syndigits:mnistm", "--space", "lr=1e-4..1e-2:log", "--space", "dropout=0..0.7",
        "--space", "grl_weight=0.1..1", "--trials", "6", "--select", "im", "--workers", "2",
    ],
    # AdaMatch's second study on mnist:mnistm (its defaults' dropout, lr and target_weight), by EnsV.
    "adamatch": [
        "adamatch", "--space", "dropout=0..0.6", "--space", "lr=5e-4..5e-3:log", "--space", "target_weight=1..10:log",
        "--trials", "8", "--select", "ensv", "--workers", "2", "--set", "tsne_points=0",
    ],
    # The same search on syndigits:mnistm at half the epochs (its 30-epoch run plateaus from epoch
    # 18): trial 0 is the pair's defaults.
    "adamatch-syndigits": [
        "adamatch", "--pair", "syndigits:mnistm", "--set", "epochs=15",
        "--space", "dropout=0..0.6", "--space", "lr=5e-4..5e-3:log", "--space", "target_weight=1..10:log",
        "--trials", "6", "--select", "ensv", "--workers", "2", "--set", "tsne_points=0",
    ],
    # Each trial adapts one source-only model (seed 0) for 5 epochs, ADDA's adaptation stage at its
    # SVHN-sized defaults, rather than pretraining again: about 7 minutes a trial, not 12.
    "adda-mnistm-syndigits": [
        "adda", "--pair", "mnistm:syndigits", "--set", "source_run={source_run}", "--set", "epochs=5",
        "--space", "lr_target=2e-5..1e-3:log", "--space", "lr_disc=2e-5..1e-3:log", "--space", "im_weight=0..1",
        "--trials", "12", "--select", "ensv", "--workers", "2",
    ],
}  # fmt: skip
# The source-only run a preset's {source_run} names: trained once in the bench's folder, then reused.
SOURCE_RUNS = {"adda-mnistm-syndigits": ("baseline", "mnistm:syndigits", 0)}  # method, pair, seed


def source_run(where: Path, method: str, pair: str, seed: int) -> str:
    """The ID of the newest finished `hw3 run METHOD --pair PAIR --seed SEED` in `where`'s
    mlflow.db, after making it when there is none."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{where.resolve() / 'mlflow.db'}")
    run_args = [method, "--pair", pair, "--seed", str(seed)]

    def find() -> str:
        query = f"params.method = '{method}' and params.pair = '{pair}' and params.seed = '{seed}'"
        for exp in client.search_experiments():
            for run in client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"]):
                if run.info.status == "FINISHED":
                    return run.info.run_id
        return ""

    if not (found := find()):
        print("in", where, ":", "hw3 run", " ".join(run_args), flush=True)
        subprocess.run([sys.executable, "-m", "runner", "run", *run_args], cwd=where, check=True)
        found = find()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mnist")
    parser.add_argument("--dir", default="", help="the folder to run in (default: bench-tune-PRESET)")
    parser.add_argument("args", nargs="*", help="hw3 tune's own arguments, after --, instead of a preset")
    opts = parser.parse_args()
    args = opts.args or PRESETS[opts.preset]
    where = Path(opts.dir or f"bench-tune-{opts.preset}")
    where.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not opts.args and opts.preset in SOURCE_RUNS:
        run_id = source_run(where, *SOURCE_RUNS[opts.preset])
        args = [a.format(source_run=run_id) for a in args]
    cmd = [sys.executable, "-m", "runner", "tune", *args]
    print("in", where, ":", "hw3 tune", " ".join(args), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=where, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    sys.stdout.write(done.stdout[-20000:])
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"hw3 tune exited {done.returncode} after {wall:.0f} s")
    parent = done.stdout.rsplit("parent run ", 1)[1].split()[0]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{where.resolve() / 'mlflow.db'}")
    table = json.loads(Path(client.download_artifacts(parent, "tune.json", str(where))).read_text())
    finished = sum(not t["pruned"] for t in table["trials"])
    print(f"\nwall time {wall / 60:.1f} min for {len(table['trials'])} trials ({finished} finished, the rest pruned)")
    oracle, best = 100 * table["oracle_target_acc"], 100 * table["best_target_acc"]
    print(f"oracle's choice {oracle:.2f}; best trial in hindsight {best:.2f}")
    for v in table["validators"]:
        acc, gap, rho = v["chosen_target_acc"], v["vs_oracle_points"], v["spearman"]
        acc_s = f"{100 * acc:6.2f}" if acc is not None else "     -"
        gap_s = f"{gap:+6.2f}" if gap is not None else "     -"
        rho_s = f"{rho:+.2f}" if rho is not None else "  -"
        print(f"{v['name']:>12}: chosen {acc_s}  vs oracle {gap_s}  Spearman {rho_s}  {v['says']}")


if __name__ == "__main__":
    main()
