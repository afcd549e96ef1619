"""Two `hw3 tune` processes on one PostgreSQL study: together they run the trials asked for, none
twice, and `kill -9` of one mid-trial leaves the study consistent for the other to finish.

The server is real: HW3_TEST_POSTGRES names it (`.ci/run` starts one with `.ci/postgres`), or this
starts one the same way where it can (root, Debian's package). Without either it is skipped with
the reason, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 12


def wait_for(what: str, check, timeout: float, procs: list[subprocess.Popen]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        if any(p.poll() not in (None, 0) for p in procs):
            raise AssertionError(f"a worker exited with {[p.poll() for p in procs]} while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_processes_share_a_study_with_no_duplicate_and_survive_a_kill_9(postgres_url: str, tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    name = f"pg-{uuid.uuid4().hex[:8]}"
    direct = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)  # this process's own reads
    args = [
        sys.executable, "-m", "runner", "tune", "baseline", "--space", "lr=3e-4..1e-2:log", "--space",
        "weight_decay=0..1e-3", "--trials", str(TRIALS), "--storage", postgres_url, "--study", name,
        "--set", "epochs=3", "--set", "train_subset=256", "--set", "test_subset=200", "--set", "threads=1",
    ]  # fmt: skip
    env = {**os.environ, "HW3_TUNE_HEARTBEAT": "1", "PYTHONUNBUFFERED": "1"}  # stale after 3 s of silence
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in (1, 2)]  # noqa: SIM115
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    second = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=logs[1], stderr=subprocess.STDOUT)
    procs = [first, second]
    try:
        wait_for("the study", lambda: name in optuna.get_all_study_names(direct), 120, procs)
        study = optuna.load_study(study_name=name, storage=direct)

        def first_is_mid_trial() -> bool:
            # Mid-run: its first epoch reported, its second (of three) not yet, so its run cannot
            # have finished (unless pruned, and a pruned run is never counted as a finished trial).
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            mine = [t for t in trials if t.state == TrialState.RUNNING and len(t.intermediate_values) == 1]
            mine = [t for t in mine if str(t.user_attrs.get("hw3.worker", "")).endswith(f":{first.pid}")]
            return done >= 2 and bool(mine)

        wait_for("the first worker to be mid-trial", first_is_mid_trial, 240, procs[1:])
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        assert second.wait(timeout=300) == 0, (tmp_path / "worker2.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()

    trials = optuna.load_study(study_name=name, storage=direct).get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == TRIALS
    assert len({tuple(sorted(t.params.items())) for t in done}) == TRIALS  # no setting ran twice
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("hw3.surplus")]
    assert len(killed) == 1 and str(killed[0].user_attrs["hw3.worker"]).endswith(f":{first.pid}")
    retry = [t for t in done if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params  # the killed trial ran again, once
    by_first = [t for t in done if str(t.user_attrs.get("hw3.worker", "")).endswith(f":{first.pid}")]
    assert by_first and len(by_first) < TRIALS  # both worked on it
    out = (tmp_path / "worker2.log").read_text()
    assert f"reality check: {sum(t.state == TrialState.COMPLETE for t in done)} finished trials" in out
