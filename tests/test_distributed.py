"""Data-parallel runs through torchrun: sharded batches, one logged run, accuracy of one process."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from runner.commands.cli import app
from runner.data import BatchStream, Split
from runner.distributed import without_option
from runner.run import RunRequest, execute

# No augmentation: each process draws its own, so the two runs would not see the same images.
SETTINGS = ["--epochs", "2", "--set", "train_subset=1024", "--set", "test_subset=500", "--set", "tsne_points=0"]
SETTINGS += ["--set", "augment=false"]


def test_each_process_takes_its_own_slice_of_the_same_global_batch() -> None:
    split = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    whole = BatchStream(split, 20, torch.Generator().manual_seed(3), labels=True)
    ranks = [BatchStream(split, 10, torch.Generator().manual_seed(3), labels=True, rank=r, world=2) for r in (0, 1)]
    for _ in range(12):  # past an epoch boundary: the reshuffle happens alike everywhere
        _, y = whole.next()
        parts = [s.next()[1] for s in ranks]
        assert torch.equal(torch.cat(parts), y)


def test_the_launcher_passes_every_option_but_nproc() -> None:
    argv = ["run", "dann", "--nproc", "2", "--epochs", "1", "--nproc=3", "--set", "lr=0.1"]
    assert without_option(argv, "--nproc") == ["run", "dann", "--epochs", "1", "--set", "lr=0.1"]


def test_nproc_2_on_the_cpu_logs_one_run_that_matches_one_process_with_the_global_batch(client) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "runner", "run", "baseline", "--nproc", "2", "--experiment", "ddp", *SETTINGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("target acc") == 1  # rank 0 alone reports
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["hw3.processes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "target_acc")] == [1, 2]
    # Two processes of 64 images average their gradients: one process with batches of 128 takes
    # the same steps on the same images, up to per-process batch-norm statistics.
    overrides = [("epochs", 2), ("train_subset", 1024), ("test_subset", 500), ("tsne_points", 0), ("batch_size", 128)]
    overrides.append(("augment", False))
    one = execute(RunRequest("baseline", overrides=overrides, experiment="one"), Console(file=io.StringIO()))
    for key in ("source_acc", "target_acc"):
        assert abs(run.data.metrics[key] - one.metrics[key]) < 0.03, key


def test_nproc_with_seeds_is_a_one_line_error() -> None:
    r = CliRunner().invoke(app, ["run", "baseline", "--nproc", "2", "--seeds", "0,1"])
    assert r.exit_code == 1 and "--nproc" in r.output and "Traceback" not in r.output


def test_more_processes_than_gpus_is_one_line_before_any_work() -> None:
    from runner.distributed import check_gpus
    from runner.errors import ConfigError

    check_gpus(2, "cpu", 0)  # gloo processes on the CPU: any number
    check_gpus(2, "auto", 0)  # auto without a GPU is the CPU
    check_gpus(4, "cuda", 4)
    for device in ("cuda", "cuda:0", "auto"):
        with pytest.raises(ConfigError, match="--nproc 2: one process per GPU, and this machine has 1 visible GPU"):
            check_gpus(2, device, 1)
    result = CliRunner().invoke(app, ["run", "dann", "--nproc", "2", "--device", "cuda"])
    assert result.exit_code == 1 and "has 0 visible GPU(s); use --nproc 1" in result.output
    assert len(result.output.strip().splitlines()) == 1
