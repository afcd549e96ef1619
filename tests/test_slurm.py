"""`--executor slurm`: a suite's runs as a Slurm job array through submitit, on a real cluster.

The cluster is real: SLURM_CONF names one (`.ci/run` starts a one-node cluster with `.ci/slurm`),
or this starts one the same way where it can (root, Debian's packages). Without either the tests
that need it are skipped with the reason, except under CI, where that is a failure. The option
checks below need no cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import ci_service

from runner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SUITE = """
[suites.pair]
runs = [
    { method = "baseline", pair = "mnist:mnistm" },
    { method = "baseline", pair = "mnist:mnistm", set = { train_on = "target" } },
]
"""
LONG = ["epochs=8", "train_subset=256", "test_subset=100", "tsne_points=0", "log_every=4"]


@pytest.fixture(scope="module")
def slurm() -> str:
    def works() -> bool:
        if shutil.which("sinfo") is None:
            return False
        up = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
        return up.returncode == 0 and any(state in up.stdout for state in ("idle", "mix", "alloc"))

    if os.environ.get("SLURM_CONF") and works():
        return os.environ["SLURM_CONF"]
    why = "no Slurm cluster: set SLURM_CONF to a running one's slurm.conf, or run as root where .ci/slurm can start one"
    return ci_service("SLURM_CONF", "slurm", why)


def hw3(tmp_path: Path, *args: str, wait: bool = True, timeout: float = 600) -> Any:
    env = {**os.environ, "HW3_REGISTRY": str(tmp_path / "registry.toml"), "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    cmd = [sys.executable, "-m", "runner", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def make_store(tmp_path: Path) -> None:
    """The MLflow store made (migrated) before hw3 starts, so this test's reads never race its making."""
    import mlflow

    (tmp_path / "registry.toml").write_text(SUITE)
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()


def suite_args(settings: list[str]) -> list[str]:
    return ["reproduce", "pair", "--executor", "slurm", "--slurm", "cpus=1", *(f"--set={s}" for s in settings)]


def runs(tmp_path: Path) -> dict[str, Any]:
    import mlflow

    from runner import record

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(ids, filter_string=f"tags.`{record.SUITE}` = 'pair'") if ids else []
    except Exception:  # the store is busy (SQLite locked): ask again
        return {}
    return {r.data.tags[record.SUITE_ITEM]: r for r in found}


def wait_for(what: str, check: Any, timeout: float, proc: Any = None) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"hw3 exited with {proc.returncode} while waiting for {what}: {proc.stdout.read()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_suite_runs_as_a_job_array_and_a_scancelled_task_resumes_to_the_same_metrics(
    slurm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner import record
    from runner.runs.execute import execute
    from runner.runs.plan import RunRequest

    make_store(tmp_path)
    first = hw3(tmp_path, *suite_args(LONG), wait=False)
    item = "baseline mnist:mnistm"

    def training() -> Any:  # the source-only run, two epochs in
        import mlflow

        run = runs(tmp_path).get(item)
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        return run if run is not None and len(client.get_metric_history(run.info.run_id, "target_acc")) >= 2 else None

    run = wait_for("two epochs of a Slurm task", training, 300, first)
    job = run.data.tags[record.SLURM_JOB]
    assert "_" in job  # an array task, as squeue names it
    subprocess.run(["scancel", job], check=True, timeout=60)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 130, out
    assert "stopped in Slurm task" in out and "run the same command again to resume" in out and "Traceback" not in out
    killed = runs(tmp_path)[item]
    assert killed.info.status == "KILLED" and Path(killed.data.tags[record.CHECKPOINT]).is_file()

    again = hw3(tmp_path, *suite_args(LONG))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"to resume run {killed.info.run_id}" in again.stdout and "finished earlier" in again.stdout
    done = runs(tmp_path)
    assert all(r.info.status == "FINISHED" for r in done.values()) and len(done) == 2
    assert done[item].info.run_id == killed.info.run_id  # resumed in place, in a task of a new array
    assert done[item].data.tags[record.SLURM_JOB] != job
    assert (tmp_path / "reports" / "pair" / "report.md").is_file()

    # Exact resume: the same run made here in one go, on one thread as the task had, ends the same.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = [tuple(s.split("=")) for s in LONG]
    whole = execute(RunRequest("baseline", pair="mnist:mnistm", overrides=[*settings, ("threads", "1")],
                               experiment="whole"))  # fmt: skip
    import mlflow

    logged = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(whole.run_id).data.metrics
    for key in ("target_acc", "source_acc", "train/loss"):
        assert logged[key] == done[item].data.metrics[key], key


def test_no_wait_submits_and_returns_and_a_later_run_collects_without_submitting_twice(
    slurm: str, tmp_path: Path
) -> None:
    make_store(tmp_path)
    short = ["epochs=3", "train_subset=128", "test_subset=100", "tsne_points=0"]
    sent = hw3(tmp_path, *suite_args(short), "--no-wait")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "submitted 2 task(s) as Slurm job array" in sent.stdout and "run the same command again" in sent.stdout
    assert not (tmp_path / "reports" / "pair" / "report.md").exists()

    meanwhile = hw3(tmp_path, *suite_args(short))  # both tasks still queued or training
    assert meanwhile.returncode == 0, meanwhile.stdout + meanwhile.stderr
    assert meanwhile.stdout.count("not submitted again") == 2 and "submitted 0" not in meanwhile.stdout

    wait_for("both tasks to finish", lambda: len(runs(tmp_path)) == 2 and all(
        r.info.status == "FINISHED" for r in runs(tmp_path).values()), 300)  # fmt: skip
    later = hw3(tmp_path, *suite_args(short))
    assert later.returncode == 0 and later.stdout.count("finished earlier") == 2, later.stdout
    assert "| FINISHED |" not in (tmp_path / "reports" / "pair" / "report.md").read_text().replace("reused", "")


def test_tune_workers_as_slurm_tasks_share_one_postgres_study_with_no_trial_twice(
    slurm: str, postgres_url: str, tmp_path: Path
) -> None:
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from runner import record

    make_store(tmp_path)
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    tiny = ["epochs=2", "train_subset=128", "test_subset=100", "tsne_points=0"]
    r = hw3(tmp_path, "tune", "baseline", "--space", "lr=3e-4..1e-2:log", "--trials", "4", "--workers", "2",
            "--executor", "slurm", "--slurm", "cpus=1", "--storage", postgres_url, "--study", name,
            *(f"--set={s}" for s in tiny))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    study = optuna.load_study(study_name=name, storage=postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    ended = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ended) == 4 and not [t for t in study.trials if t.state == TrialState.RUNNING]
    # Two Slurm tasks took the trials between them; each trial ran once, as one MLflow run.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    trials = client.search_runs(ids, filter_string=f"tags.`{record.STUDY}` = '{name}'")
    trials = [t for t in trials if record.TRIAL in t.data.tags]
    numbers = sorted(int(t.data.tags[record.TRIAL]) for t in trials)
    assert numbers == sorted(t.number for t in ended) and len(set(numbers)) == 4, numbers
    assert len({t.data.tags[record.SLURM_JOB] for t in trials}) == 2  # one array task per worker
    assert all(t.info.status == "FINISHED" for t in trials)
    assert "reality check" in r.stdout.lower() or "chosen" in r.stdout.lower(), r.stdout


def test_a_wrong_partition_is_one_line_before_anything_is_submitted(slurm: str, tmp_path: Path) -> None:
    make_store(tmp_path)
    r = hw3(tmp_path, "reproduce", "pair", "--executor", "slurm", "--slurm", "partition=gpuu")
    assert r.returncode == 1 and "--slurm partition=gpuu: no such partition" in r.stderr and "debug" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not runs(tmp_path)


# -- without a cluster -------------------------------------------------------------------------


def test_slurm_options_parse_as_sbatch_takes_them() -> None:
    from runner.runs.slurm import SlurmOptions

    o = SlurmOptions.parse(["partition=gpu", "time=1:30:00", "cpus=8", "gpus=1", "mem=16g", "account=lab",
                            "qos=short", "sbatch=--constraint=a100", "limit=4", "logs=/shared/logs"])  # fmt: skip
    p = o.parameters(10)
    assert (p["partition"], p["time"], p["cpus_per_task"], p["gpus_per_node"], p["mem"]) == ("gpu", 90, 8, 1, "16G")
    assert (p["account"], p["qos"], p["array_parallelism"]) == ("lab", "short", 4)
    assert p["additional_parameters"] == {"constraint": "a100"} and o.logs == "/shared/logs"
    assert SlurmOptions.parse([]).parameters(3)["array_parallelism"] == 3  # no limit: the whole array at once
    times = {"90": 90, "30:30": 31, "2-12": 3600, "1-00:30": 1470, "0:01:00": 1}
    assert {t: SlurmOptions.parse([f"time={t}"]).time for t in times} == times


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("partition", "write KEY=VALUE"),
        ("partion=gpu", "not an option (did you mean 'partition'?)"),
        ("time=soon", "write minutes (90)"),
        ("cpus=0", "at least 1"),
        ("mem=lots", "such as 8G"),
        ("sbatch=constraint=a100", "a long sbatch option"),
    ],
)
def test_bad_slurm_options_are_one_line(item: str, expected: str) -> None:
    from runner.runs.slurm import SlurmOptions

    with pytest.raises(ConfigError, match=re.escape(expected)):
        SlurmOptions.parse([item])


def test_the_executor_options_are_checked_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.commands.options import executor_from

    assert executor_from("local", None) is None
    with pytest.raises(ConfigError, match="not an executor .*choose from: local, slurm"):
        executor_from("slrum", None)
    with pytest.raises(ConfigError, match="add --executor slurm"):
        executor_from("local", ["partition=gpu"])
    with pytest.raises(ConfigError, match="--no-wait submits to Slurm"):
        executor_from("local", None, wait=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="no sbatch on PATH; run this on a Slurm login node"):
        executor_from("slurm", None)


def test_a_store_on_this_hosts_own_disk_is_refused_where_other_nodes_run_the_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runner.runs import slurm

    monkeypatch.setattr(slurm, "_nodes", lambda: ["node01", "node02"])
    with pytest.raises(ConfigError, match=r"on this host's own disk \(tmp\), which the nodes \(node01, node02\)"):
        slurm._check_store("sqlite:////tmp/x/mlflow.db")
    slurm._check_store("sqlite:////shared/lab/mlflow.db")  # a shared filesystem: fine
    slurm._check_store("http://mlflow.lab:5000")
    monkeypatch.setattr(slurm, "_nodes", lambda: [__import__("socket").gethostname()])
    slurm._check_store("sqlite:////tmp/x/mlflow.db")  # the tasks run on this host: they see its disk
    assert slurm.absolute_store("sqlite:///mlflow.db") == f"sqlite:///{Path.cwd() / 'mlflow.db'}"
