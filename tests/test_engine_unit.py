"""The engine's fast tier: a ten-line method on random tensors and an in-memory sink, no MLflow,
no datasets, no plugin manager. Each test takes a fraction of a second."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from runner.checkpoint import checkpoint_path, load
from runner.config import ResolvedConfig, Task
from runner.context import Domain, RunContext
from runner.datasets import Split
from runner.engine import fit
from runner.errors import RunFailed, RunInterrupted
from runner.method import Method
from runner.runs.prepare import make_context
from runner.settings import RunSettings
from runner.sinks import MemorySink, ending


class Line(Method):
    """Logistic regression on 4 pixels; `stop_at` sends Ctrl-C, `nan_at` returns NaN, at that step."""

    name, kind = "line", "generate"
    stop_at = nan_at = -1

    def setup(self, ctx):
        self.net = torch.nn.Linear(4, 2)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.5, momentum=0.9)

    def train_step(self, ctx, batch):
        if ctx.step + 1 == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        x, y = batch["data"]
        loss = F.cross_entropy(self.net(x.flatten(1)), y)
        ctx.optimize(loss, self.opt)
        return {"loss": float("nan") if ctx.step + 1 == self.nan_at else loss.item()}

    def evaluate(self, ctx):
        test = ctx.domains["data"].test
        pred = self.net(test.images.flatten(1).float() / 127.5 - 1).argmax(1)
        return {"acc": float((pred == test.labels).float().mean())}


def toy(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 120, (n, 1, 2, 2), generator=g, dtype=torch.uint8) + 100 * labels.view(n, 1, 1, 1).byte()
    return Split(images, labels)


def context(tmp_path: Path, epochs: int = 3) -> RunContext:
    settings = RunSettings(epochs=epochs, batch_size=8, log_every=2, checkpoint_dir=str(tmp_path), tsne_points=0)
    resolved = ResolvedConfig("line", settings, Line.Config(), Task.single("toy"))
    domains = {"data": Domain("toy", toy(64, 0), toy(32, 1), ("a", "b"))}
    return make_context(resolved, domains, run_id="unit")


def fit_and_end(method: Method, ctx: RunContext, sink: MemorySink, **kw):  # type: ignore[no-untyped-def]
    """`fit`, then the run ended as its owner (the tracker's `open`) ends it."""
    with ending(sink):
        return fit(method, ctx, sink, **kw)


def run(tmp_path: Path, method: Method | None = None, **kw) -> tuple[MemorySink, dict[str, float]]:
    sink = MemorySink()
    result = fit_and_end(method or Line(Line.Config()), context(tmp_path), sink, **kw)
    return sink, result.metrics


def test_a_run_logs_epochs_steps_and_figures_and_finishes(tmp_path: Path) -> None:
    sink, metrics = run(tmp_path)
    assert sink.status == "FINISHED"
    assert [step for step, _ in sink.metrics["acc"]] == [1, 2, 3]
    assert [step for step, _ in sink.metrics["step/loss"]] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]
    assert sink.figures == ["figures/curves.png"] and metrics["acc"] == sink.last("acc")
    assert metrics["acc"] > 0.8  # it learns: the two classes differ by 100 grey levels


def test_interrupted_then_resumed_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    _, whole = run(tmp_path / "whole")
    stopped = Line(Line.Config())
    stopped.stop_at = 11  # 8 steps per epoch: epoch 2, step 3
    sink = MemorySink()
    with pytest.raises(RunInterrupted, match="interrupted at epoch 2, step 3") as info:
        fit_and_end(stopped, context(tmp_path / "cut"), sink)
    assert sink.status == "KILLED" and info.value.run_id == "unit"
    state = load(checkpoint_path(str(tmp_path / "cut"), "unit"))
    assert (state.epoch, state.step, state.step_in_epoch) == (1, 11, 3)
    _, resumed = run(tmp_path / "cut", resume=state)
    assert resumed == whole


def test_a_non_finite_loss_stops_the_run_failed_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    method = Line(Line.Config())
    method.nan_at = 12
    sink = MemorySink()
    with pytest.raises(RunFailed, match="'loss' became nan at epoch 2, step 4; .*the last good checkpoint is kept"):
        fit_and_end(method, context(tmp_path), sink)
    assert sink.status == "FAILED" and "became nan" in sink.texts["error.txt"] and "hw3.error" in sink.tags
    assert load(checkpoint_path(str(tmp_path), "unit")).epoch == 1  # the NaN step was never saved


def test_a_non_finite_loss_before_any_checkpoint_says_there_is_none(tmp_path: Path) -> None:
    method = Line(Line.Config())
    method.nan_at = 3
    with pytest.raises(RunFailed, match="no checkpoint was written yet"):
        fit_and_end(method, context(tmp_path), MemorySink())
    assert not checkpoint_path(str(tmp_path), "unit").exists()


def test_a_method_exception_is_failed_with_its_traceback_and_owner(tmp_path: Path) -> None:
    class Broken(Line):
        def evaluate(self, ctx):
            raise ValueError("shapes do not match")

    sink = MemorySink()
    with pytest.raises(RunFailed, match="method 'line' \\(plugin 'p', pkg\\) raised ValueError: shapes do not match"):
        fit_and_end(Broken(Line.Config()), context(tmp_path), sink, owner="method 'line' (plugin 'p', pkg)")
    assert sink.status == "FAILED" and "Traceback" in sink.texts["error.txt"]


def test_lifecycle_hooks_see_start_each_epoch_and_the_end(tmp_path: Path) -> None:
    seen = []

    class Hooks:
        def run_start(self, run):
            seen.append(("start", run.epoch))

        def epoch_end(self, run, epoch, metrics):
            seen.append(("epoch", epoch))

        def run_end(self, run, status, metrics):
            seen.append(("end", status))

    run(tmp_path, hooks=Hooks())
    assert seen == [("start", 0), ("epoch", 1), ("epoch", 2), ("epoch", 3), ("end", "FINISHED")]


def test_the_curves_figure_plots_losses_and_accuracies_but_not_schedules() -> None:
    from runner.figures import curves_figure

    history = [
        {"train/loss": 1.0 - e / 10, "train/loss/domain": 0.6, "train/lambda": e / 3, "train/lr": 1e-3,
         "train/acc": 0.5 + e / 10, "target_acc": 0.4, "validator/im": 1.2, "selected/last/target_acc": 0.4}
        for e in range(3)
    ]  # fmt: skip
    losses, accs = curves_figure(history, "t").axes
    assert sorted(line.get_label() for line in losses.lines) == ["train/loss", "train/loss/domain"]
    assert sorted(line.get_label() for line in accs.lines) == ["target_acc", "train/acc"]
