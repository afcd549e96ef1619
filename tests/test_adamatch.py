"""AdaMatch and its strong augmentation: the views are drawn from the method's own stream on the
images' device, the method learns, resumes exactly after Ctrl-C mid-epoch, and its fair ceiling
trains on target labels with the same recipe."""

from __future__ import annotations

import io
import math

import pytest
import torch
from helpers import MethodsPlugin
from rich.console import Console

from plugins.methods.adamatch import AdaMatch, AdaMatchConfig, ramp
from runner.adapt.augmentation import strong_augment
from runner.errors import RunInterrupted
from runner.runs.execute import RunRequest, execute
from runner.runs.plugins import get_manager, registered

TINY = [("train_subset", "256"), ("test_subset", "200"), ("epochs", "2"), ("tsne_points", "0"), ("log_every", "4")]


def quiet(req: RunRequest):
    return execute(req, Console(file=io.StringIO()))


def images(n: int = 512, size: int = 28) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_strong_views_repeat_for_a_generator_state_and_stay_in_the_image_range() -> None:
    x = images(64)
    a = strong_augment(x, torch.Generator().manual_seed(3))
    b = strong_augment(x, torch.Generator().manual_seed(3))
    c = strong_augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_every_strong_view_has_a_grey_cutout_and_about_half_are_inverted() -> None:
    x = -torch.ones(400, 1, 32, 32)  # black, with a bright square in the middle
    x[:, :, 12:20, 12:20] = 1.0
    y = strong_augment(x, torch.Generator().manual_seed(1))
    # A cutout is at least a quarter of the side: 8x8 grey pixels, or a clipped part of them at an edge.
    grey = (y == 0).flatten(1).float().sum(1)
    assert (grey >= 16).float().mean() > 0.95
    xc, yc = x - x.mean((1, 2, 3), keepdim=True), y - y.mean((1, 2, 3), keepdim=True)
    inverted = ((xc * yc).mean((1, 2, 3)) < 0).float().mean().item()
    assert 0.35 < inverted < 0.65  # inversion (p = 0.5), with solarize and the rest blurring the count


def test_the_target_weight_ramps_over_the_first_half_then_holds() -> None:
    assert ramp(0.0) == 0.0 and math.isclose(ramp(0.25), 0.5) and ramp(0.5) == 1.0 and ramp(0.9) == 1.0


def test_adamatch_learns_the_embedded_pair_and_logs_its_parts(client) -> None:
    # 24 steps: too few for the averaged weights (decay 0.99) to move far from their start, so the
    # weights as trained are tested.
    plain = [("train_subset", "512"), ("epochs", "3"), ("ema", "0"), ("teacher", "false")]
    result = quiet(RunRequest("adamatch", overrides=[*TINY, *plain]))
    assert result.status == "FINISHED"
    assert result.metrics["target_acc"] > 0.3  # ten classes: chance is 0.1
    run = client.get_run(result.run_id)
    for key in ("train/loss/source", "train/loss/target", "train/confident", "validator/im"):
        assert key in run.data.metrics, key
    assert run.data.tags["method"] == "adamatch"


def test_the_fair_ceiling_trains_on_target_labels_and_is_an_upper_bound_row() -> None:
    method = AdaMatch(AdaMatchConfig(labels="target"))
    assert method.train_domains() == {"target": True}
    row = method.report_row()
    assert row is not None and row.place == 2 and "target only" in row.label
    assert AdaMatch(AdaMatchConfig()).train_domains() == {"source": True, "target": False}
    result = quiet(RunRequest("adamatch", overrides=[*TINY, ("labels", "target"), ("ema", "0")]))
    assert result.status == "FINISHED" and result.metrics["target_acc"] > 0.2


class AdaMatchInterruptAt(AdaMatch):
    """AdaMatch, sending itself SIGINT (as Ctrl-C does) during global step `at_step`."""

    name = "adamatch-interrupt-at"
    at_step = -1

    def train_step(self, ctx, batch):  # type: ignore[no-untyped-def]
        import os
        import signal

        if ctx.step + 1 == AdaMatchInterruptAt.at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(ctx, batch)


class AdaMatchWhole(AdaMatch):
    name = "adamatch-whole"  # the same experiment's seeds and settings, under another name


def test_ctrl_c_mid_epoch_then_resume_matches_an_uninterrupted_run(client) -> None:
    # 256 images, batch 64: 4 steps an epoch; step 6 is epoch 2's second, after the target
    # weight, the learning-rate decay, the averaged weights and both streams have all moved.
    with registered(MethodsPlugin(AdaMatchWhole, AdaMatchInterruptAt), name="test-adamatch"):
        whole = quiet(RunRequest("adamatch-whole", overrides=TINY))
        AdaMatchInterruptAt.at_step = 6
        with pytest.raises(RunInterrupted, match="epoch 2, step 2"):
            quiet(RunRequest("adamatch-interrupt-at", overrides=TINY, run_name="am-interrupted"))
        run = client.search_runs(
            [client.get_experiment_by_name("hw3-mnist-mnistm").experiment_id],
            filter_string="attributes.run_name = 'am-interrupted'",
        )[0]
        assert run.info.status == "KILLED"
        AdaMatchInterruptAt.at_step = -1
        resumed = quiet(RunRequest("adamatch-interrupt-at", resume=run.info.run_id))
    assert resumed.status == "FINISHED"
    assert resumed.metrics == whole.metrics


def test_a_teacher_without_averaged_weights_is_a_one_line_error() -> None:
    from runner.errors import ConfigError

    with pytest.raises(ConfigError, match="set ema > 0 or teacher=false"):
        quiet(RunRequest("adamatch", overrides=[*TINY, ("ema", "0")]))


def test_the_paper_preset_is_the_published_recipe() -> None:
    from runner.runs.plan import make_plan

    planned = make_plan(RunRequest("adamatch", preset="paper"), get_manager())
    c = planned.resolved.method_config
    assert (c.optimizer, c.lr, c.weight_decay, c.ema, c.tau) == ("sgd", 0.03, 5e-4, 0.999, 0.9)
    assert (c.strong, c.teacher, c.bn_mode, c.align, c.interpolate) == (True, False, "joint", True, True)


def test_nproc_2_on_the_cpu_runs_adamatch_to_one_finished_run(client) -> None:
    """Several forward passes of one network before its backward (the joint batch, then the
    source alone) under DistributedDataParallel's averaging."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tiny = ["--epochs", "2", "--set", "train_subset=512", "--set", "test_subset=100", "--set", "tsne_points=0"]
    cmd = [sys.executable, "-m", "runner", "run", "adamatch", "--nproc", "2", "--experiment", "ddp-adamatch", *tiny]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("ddp-adamatch").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics["train/loss/source"] > 0
