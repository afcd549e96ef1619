"""Data-parallel runs through torchrun: sharded batches, gradients averaged by DDP, one logged run, the
steps of one process with the global batch."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from runner.checkpoint import checkpoint_path, load
from runner.commands.cli import app
from runner.data import BatchStream, Split
from runner.distributed import without_option
from runner.runs.execute import RunRequest, execute

# The same steps in 2 processes of 64 images as in 1 of 128: no augmentation (each process draws
# its own) and no batch norm (its statistics are each process's own), so the two runs differ only
# in the order floats are summed. Every step's loss is logged.
SETTINGS = ["--epochs", "2", "--set", "train_subset=1024", "--set", "test_subset=500", "--set", "tsne_points=0"]
SETTINGS += ["--set", "augment=false", "--set", "batch_norm=false", "--set", "log_every=1"]
SETTINGS += ["--set", "optimizer=sgd", "--set", "lr=0.2"]


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


# Run by torchrun in 2 processes: `RunContext.optimize` against gradients averaged by hand.
OPTIMIZE_IN_2_PROCESSES = """
import torch, torch.distributed as dist
from torch import nn
from runner.context import RunContext
from runner.distributed import Dist, shutdown

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ctx = RunContext(None, torch.device("cpu"), {}, dist=Dist(rank, world))
torch.manual_seed(0)  # the same weights in both
# Two layers each: the second's weight is saved for backward (so a replica built after the
# forward must leave the parameters' versions alone).
D = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
G = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 4))
head = nn.Linear(4, 1)
opt_d = torch.optim.SGD([*D.parameters(), *head.parameters()], lr=0.1)
opt_g = torch.optim.SGD(G.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(rank)  # each process its own data

def averaged(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    out = []
    for p, g in zip(params, grads):
        reached = torch.tensor([float(g is not None)])
        dist.all_reduce(reached)
        g = torch.zeros_like(p) if g is None else g.clone()
        dist.all_reduce(g)
        out.append(g / world if reached.item() else None)
    return out

def check(params, expected):
    for p, e in zip(params, expected):
        assert (p.grad is None) if e is None else torch.allclose(p.grad, e, atol=1e-7), (p.grad, e)

for step in range(6):
    ctx.scaler = torch.amp.GradScaler("cpu") if step >= 4 else None  # the fp16 path's scaling
    real, fake = torch.randn(8, 4, generator=gen), G(torch.randn(8, 2, generator=gen))
    # head: reached by both processes, by neither, by rank 0 only
    reach = {0: True, 1: False, 2: rank == 0}.get(step, True)
    d_loss = D(real).mean() - D(fake.detach()).mean() + (head(real).mean() if reach else 0)
    d_params = [*D.parameters(), *head.parameters()]
    expected = averaged(d_loss, d_params)
    ctx.optimize(d_loss, opt_d)
    check(d_params, expected)
    g_loss = -D(fake).mean()  # through D, whose own replica is not called
    expected = averaged(g_loss, list(G.parameters()))
    ctx.optimize(g_loss, opt_g)
    check(list(G.parameters()), expected)
flat = torch.cat([p.detach().flatten() for m in (D, G, head) for p in m.parameters()])
first = flat.clone()
dist.broadcast(first, 0)
assert torch.equal(flat, first)  # the same steps in both processes
print(f"ok{rank}", flush=True)
shutdown(ctx.dist)
# As hw3's CLI ends (runner.commands.cli._exit_now): no interpreter teardown, in which a gloo
# thread still being joined aborted a rank after both had passed (once in CI).
import os, sys
sys.stdout.flush()
os._exit(0)
"""


def test_optimize_averages_gradients_over_processes_for_every_optimizer_and_any_reach(tmp_path) -> None:
    """DDP through optimize's pass-through: a GAN's two losses (G's through D), a parameter no
    process reaches (it keeps no gradient) or one process alone does, and the fp16 scaler."""
    script = tmp_path / "optimize.py"
    script.write_text(OPTIMIZE_IN_2_PROCESSES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ok0" in done.stdout and "ok1" in done.stdout
    assert "find_unused_parameters" not in done.stderr, done.stderr[-2000:]  # DDP's false alarm


def test_nproc_2_on_the_cpu_logs_one_run_that_takes_the_steps_of_one_process_with_the_global_batch(client) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "runner", "run", "baseline", "--nproc", "2", "--experiment", "ddp", *SETTINGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("target acc") == 1  # rank 0 alone reports
    assert "find_unused_parameters" not in done.stderr, done.stderr[-2000:]  # DDP's false alarm
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["hw3.processes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "target_acc")] == [1, 2]
    # DDP averages the two processes' gradients of their 64 images: one process with batches of
    # 128 takes the same steps on the same images, to float rounding.
    overrides = [("epochs", 2), ("train_subset", 1024), ("test_subset", 500), ("tsne_points", 0), ("batch_size", 128)]
    overrides += [("augment", False), ("batch_norm", False), ("log_every", 1), ("optimizer", "sgd"), ("lr", 0.2)]
    one = execute(RunRequest("baseline", overrides=overrides, experiment="one"), Console(file=io.StringIO()))

    def step_losses(run_id: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run_id, "step/loss"), key=lambda m: m.step)]

    losses, expected = step_losses(run.info.run_id), step_losses(one.run_id)
    assert len(losses) == len(expected) == 16  # 1024 images / 128 a step, 2 epochs
    assert losses == pytest.approx(expected, rel=1e-4)
    assert losses[-1] < losses[0] - 0.1  # it trained: a loss that stood still would match too
    weights = load(checkpoint_path("checkpoints", run.info.run_id)).method["net"]
    for key, value in load(checkpoint_path("checkpoints", one.run_id)).method["net"].items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    for key in ("source_acc", "target_acc"):
        assert abs(run.data.metrics[key] - one.metrics[key]) <= 0.004, key  # 2 of 500 images


def test_nproc_2_runs_dann_whose_rank_0_alone_makes_networks_in_evaluate(client) -> None:
    """DANN calls its networks' parts and makes AdaBN copies on rank 0 in `evaluate`: the second
    epoch's broadcast must leave those out (they once made the processes' broadcasts differ)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tiny = ["--epochs", "2", "--set", "train_subset=512", "--set", "test_subset=100", "--set", "tsne_points=0"]
    cmd = [sys.executable, "-m", "runner", "run", "dann", "--nproc", "2", "--experiment", "ddp-dann", *tiny]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("ddp-dann").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]


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
