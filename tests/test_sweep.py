"""`hw3 sweep`: a parent run, a child per setting and seed, a table; everything checked up front."""

from __future__ import annotations

import io
import json
import statistics
import uuid
from pathlib import Path

import pytest
from helpers import InterruptAt, MethodsPlugin, NanAt
from rich.console import Console
from typer.testing import CliRunner

from runner.commands.cli import app
from runner.commands.sweep import metric_prefix, parse_grid, run_sweep
from runner.errors import ConfigError, RunInterrupted
from runner.runs.execute import RunRequest
from runner.runs.placement import (
    auto_workers,
    cores,
    device_for,
    parse_workers,
    resolve_workers,
    threads_per_run,
)
from runner.runs.plugins import registered

TINY = [("epochs", "1"), ("train_subset", "256"), ("test_subset", "300"), ("tsne_points", "0"), ("log_every", "4")]
TINY_ARGS = [f"--set={k}={v}" for k, v in TINY]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100) if exp else []


def test_a_2x1_grid_over_2_seeds_nests_4_children_under_1_parent(client, tmp_path: Path) -> None:
    experiment = f"sweep-test-{uuid.uuid4().hex[:8]}"
    result = invoke(
        "sweep", "baseline", "--grid", "lr=0.001,0.01", "--grid", "batch_size=64", "--seeds", "0,1",
        "--experiment", experiment, *TINY_ARGS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    runs = runs_of(client, experiment)
    parents = [r for r in runs if r.data.tags.get("hw3.sweep") == "true"]
    assert len(parents) == 1 and len(runs) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["hw3.parent"] == "true"
    assert parent.data.params["grid.lr"] == "0.001,0.01" and parent.data.params["grid.batch_size"] == "64"
    assert parent.data.params["seeds"] == "0,1" and "lr" not in parent.data.params
    children = [r for r in runs if r is not parent]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.info.status == "FINISHED" and c.data.tags["hw3.sweep.child"] == "true" for c in children)

    for lr in ("0.001", "0.01"):
        mine = [c for c in children if c.data.tags["hw3.grid.lr"] == lr]
        assert sorted(c.data.params["seed"] for c in mine) == ["0", "1"]
        assert {(c.data.params["lr"], c.data.tags["hw3.grid.batch_size"]) for c in mine} == {(lr, "64")}
        accs = [c.data.metrics["target_acc"] for c in mine]
        prefix = metric_prefix({"lr": lr, "batch_size": "64"})
        assert parent.data.metrics[f"{prefix}/target_acc/mean"] == pytest.approx(statistics.fmean(accs))
        assert parent.data.metrics[f"{prefix}/target_acc/std"] == pytest.approx(statistics.stdev(accs))
        assert parent.data.metrics[f"{prefix}/runs"] == 2
        # the printed table's cell for this row
        assert f"{statistics.fmean(accs):.2%} ± {statistics.stdev(accs):.2%}" in result.stdout

    path = client.download_artifacts(parent.info.run_id, "sweep.json", str(tmp_path))
    summary = json.loads(Path(path).read_text())
    assert [s["values"] for s in summary["settings"]] == [
        {"lr": "0.001", "batch_size": "64"},
        {"lr": "0.01", "batch_size": "64"},
    ]
    assert {r["run_id"] for s in summary["settings"] for r in s["runs"]} == {c.info.run_id for c in children}
    table = Path(client.download_artifacts(parent.info.run_id, "sweep.md", str(tmp_path))).read_text()
    assert "| lr | batch_size | target_acc (mean ± std) | runs |" in table


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--grid", "lrr=0.1,0.01"], "--grid: unknown config key 'lrr' for method 'baseline' (did you mean 'lr'?)"),
        (["--grid", "lr=0.1,abc"], "--grid lr='abc': expected a number"),
        (["--grid", "train_on=source,all"], "--grid train_on='all': must be one of source, target, both"),
        (["--grid", "lr="], "a value is empty"),
        (["--grid", "lr=0.1,,0.2"], "a value is empty"),
        (["--grid", "lr"], "write KEY=V1,V2"),
        (["--grid", "lr=0.1", "--grid", "lr=0.2"], "--grid lr is given twice"),
        (["--grid", "lr=0.1,1e-1"], "'0.1' and '1e-1' are the same value"),
        (["--grid", "seed=0,1"], "use --seeds"),
        (["--grid", "lr=0.1", "--set", "lr=0.2"], "'lr' is in both --set and --grid"),
        (["--grid", "epochs=1,0"], "--grid epochs=0: epochs=0: must be at least 1"),
        (["--grid", "lr=0.1", "--set", "nosuch=1"], "unknown config key 'nosuch'"),
        (["--grid", "lr=0.1", "--seeds", "0,x"], "--seeds '0,x': write whole numbers"),
        (["--grid", "lr=0.1", "--seeds", "0,1", "--set", "seed=3"], "either --set seed=N or --seeds"),
        (["--grid", "lr=0.1", "--pair", "mnist:nosuch"], "unknown dataset 'nosuch'"),
    ],
)
def test_bad_sweeps_are_one_line_exit_1_and_start_no_run(client, args: list[str], expected: str) -> None:
    experiment = f"sweep-invalid-{uuid.uuid4().hex[:8]}"
    result = invoke("sweep", "baseline", "--experiment", experiment, *args)
    assert result.exit_code == 1, result.output
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert client.get_experiment_by_name(experiment) is None


def test_a_failed_child_does_not_stop_the_sweep(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NanAt, "nan_step", 6)  # 256 images: 4 steps, fine; 1024 images: NaN at step 6
    experiment = f"sweep-nan-{uuid.uuid4().hex[:8]}"
    args = [a for a in TINY_ARGS if "train_subset" not in a]
    with registered(MethodsPlugin(NanAt), name="nan"):
        result = invoke("sweep", "nan-at", "--grid", "train_subset=256,1024", "--experiment", experiment, *args)
    assert result.exit_code == 1, result.output
    assert "1 of 2 runs failed" in result.stderr
    assert "0 of 1 (1 failed)" in result.stdout
    runs = runs_of(client, experiment)
    parent = next(r for r in runs if r.data.tags.get("hw3.sweep") == "true")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/runs_failed"] == 1 and parent.data.metrics["sweep/runs_finished"] == 1
    statuses = {r.data.tags["hw3.grid.train_subset"]: r.info.status for r in runs if r is not parent}
    assert statuses == {"256": "FINISHED", "1024": "FAILED"}


def test_ctrl_c_marks_the_parent_killed(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InterruptAt, "at_step", 3)  # during the first child's first epoch
    experiment = f"sweep-killed-{uuid.uuid4().hex[:8]}"
    req = RunRequest("interrupt-at", overrides=TINY, experiment=experiment)
    with registered(MethodsPlugin(InterruptAt), name="interrupt"), pytest.raises(RunInterrupted, match="0 of 2"):
        run_sweep(req, parse_grid(["lr=0.001,0.01"]), None, Console(file=io.StringIO()))
    runs = runs_of(client, experiment)
    assert len(runs) == 2  # the parent and the one child that started
    assert {r.info.status for r in runs} == {"KILLED"}


def test_workers_run_children_side_by_side_with_the_cores_split(client) -> None:
    experiment = f"sweep-workers-{uuid.uuid4().hex[:8]}"
    result = invoke("sweep", "baseline", "--grid", "lr=0.001,0.01", "--workers", "2", "--experiment", experiment,
                    *TINY_ARGS)  # fmt: skip
    assert result.exit_code == 0, result.output
    threads = threads_per_run(2, cores())
    assert f"2 runs, 2 at a time, {threads} thread(s) each" in result.stdout
    runs = runs_of(client, experiment)
    parent = next(r for r in runs if r.data.tags.get("hw3.sweep") == "true")
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" and c.data.params["threads"] == str(threads) for c in children)
    assert sorted(c.data.params["lr"] for c in children) == ["0.001", "0.01"]
    starts = sorted(c.info.start_time for c in children)
    ends = sorted(c.info.end_time for c in children)
    assert starts[1] < ends[0]  # the second began before the first ended: side by side


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", "--workers 'abc': write a whole number of runs at once, such as 4, or auto"),
        ("0", "--workers 0: must be at least 1 (or auto)"),
        ("-2", "--workers -2: must be at least 1"),
        ("1.5", "--workers '1.5': write a whole number"),
    ],
)
def test_bad_workers_are_one_line_exit_1_and_start_no_run(client, value: str, expected: str) -> None:
    experiment = f"sweep-workers-{uuid.uuid4().hex[:8]}"
    result = invoke("sweep", "baseline", "--grid", "lr=0.1", "--workers", value, "--experiment", experiment)
    assert result.exit_code == 1, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output and client.get_experiment_by_name(experiment) is None


def test_parse_workers() -> None:
    assert parse_workers("auto") == parse_workers(" AUTO ") == "auto"
    assert parse_workers("3") == parse_workers(3) == 3
    for bad in ("", "x", "0", "-1", "2.0"):
        with pytest.raises(ConfigError, match="--workers"):
            parse_workers(bad)


@pytest.mark.parametrize(
    ("device", "gpus", "cores", "expected"),
    [
        # On the CPU: 1 below 8 cores (2-core machines above all), then one run per 4 cores.
        ("cpu", 0, 1, 1),
        ("cpu", 0, 2, 1),
        ("auto", 0, 2, 1),
        ("cpu", 0, 7, 1),
        ("cpu", 0, 8, 2),
        ("auto", 0, 16, 4),
        ("cpu", 4, 64, 16),  # GPUs there, but the runs are on the CPU
        ("mps", 0, 10, 2),
        ("cuda", 0, 2, 1),  # no GPU: the run itself will say so; the CPU rule meanwhile
        # On CUDA: 4 per GPU, at most one per core.
        ("cuda", 1, 16, 4),
        ("auto", 1, 16, 4),
        ("cuda", 1, 2, 2),
        ("cuda", 1, 1, 1),
        ("cuda", 2, 16, 8),
        ("auto", 8, 16, 16),
        ("cuda:1", 4, 64, 4),  # the user's one GPU
        ("CUDA:0", 2, 3, 3),
    ],
)
def test_auto_workers(device: str, gpus: int, cores: int, expected: int) -> None:
    assert auto_workers(device, gpus, cores) == expected


def test_resolve_workers_never_starts_more_processes_than_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.runs.placement as workers

    monkeypatch.setattr(workers, "cores", lambda: 16)
    monkeypatch.setattr(workers, "visible_gpus", lambda: 0)
    assert resolve_workers("auto", "cpu", 10) == 4 and resolve_workers("auto", "cpu", 3) == 3
    assert resolve_workers(8, "cpu", 5) == 5 and resolve_workers("2", "cpu", 5) == 2
    assert resolve_workers(4, "cpu", 0) == 1
    monkeypatch.setattr(workers, "visible_gpus", lambda: 2)
    assert resolve_workers("auto", "cuda", 100) == 8 and resolve_workers("auto", "cuda:0", 100) == 4


def test_round_robin_over_the_gpus() -> None:
    assert [device_for("cuda", slot, 2) for slot in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert [device_for("auto", slot, 3) for slot in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert [device_for("cuda:1", slot, 2) for slot in range(3)] == ["cuda:1"] * 3  # the user's choice, shared
    assert device_for("cuda", 3, 1) == "cuda" and device_for("auto", 1, 1) == "auto"  # one GPU: nothing to spread
    assert device_for("cpu", 1, 4) == "cpu" and device_for("mps", 1, 4) == "mps"


def test_threads_split_the_cores() -> None:
    assert [threads_per_run(w, 2) for w in (1, 2, 3)] == [2, 1, 1]
    assert [threads_per_run(w, 16) for w in (1, 4, 5, 16, 32)] == [16, 4, 3, 1, 1]


def test_a_dead_worker_process_is_a_one_line_failure_not_a_traceback() -> None:
    import io
    import threading
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from rich.console import Console

    from runner.errors import RunFailed
    from runner.runs.plan import RunRequest
    from runner.runs.pool import Job, RunWork, _Drain

    future: Future = Future()
    future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
    jobs = [Job(RunWork(RunRequest("baseline")), "lr=0.1 seed 0")]
    drain = _Drain([future], threading.Event(), jobs, Console(file=io.StringIO()), lambda i, outcome: outcome())
    drain.settle(future)
    assert isinstance(drain.error, RunFailed) and drain.stop.is_set()
    assert "lr=0.1 seed 0: a worker process died" in str(drain.error) and "rerun the same command" in str(drain.error)
