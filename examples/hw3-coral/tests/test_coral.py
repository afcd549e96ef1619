"""Deep CORAL's loss, the rotated-MNIST dataset, and one epoch of each through hw3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hw3_coral.plugin as plugin
from hw3_coral.coral import coral_loss, covariance


def test_covariance_matches_numpy() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(covariance(x), torch.from_numpy(np.cov(x.numpy(), rowvar=False)))


def test_coral_loss_is_the_scaled_squared_frobenius_distance() -> None:
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(64, 3, generator=gen), 2 * torch.randn(64, 3, generator=gen)
    expected = ((covariance(s) - covariance(t)) ** 2).sum() / (4 * 3**2)
    assert coral_loss(s, t).item() == pytest.approx(expected.item())
    assert coral_loss(s, s).item() == 0.0
    assert coral_loss(s, s + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # a shifted mean is not penalised
    assert coral_loss(s, t).item() > 0.01


def test_coral_loss_pulls_target_covariance_towards_source() -> None:
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(128, 5, generator=gen)
    t = (3 * torch.randn(128, 5, generator=gen)).requires_grad_()
    before = coral_loss(s, t)
    before.backward()
    after = coral_loss(s, (t - 0.5 * t.grad / t.grad.abs().max()).detach())
    assert after < before


def test_plugin_registers_its_method_and_dataset(hw3_env) -> None:
    info = hw3_env.register(plugin, name="coral")
    assert info.hooks == ["hw3_register_datasets", "hw3_register_methods", "hw3_register_validators"]
    assert info.api == "1"
    shown = hw3_env.cli("show", "coral")
    assert shown.exit_code == 0, shown.output
    assert "coral_weight" in shown.stdout


def test_rotated_mnist_is_mnist_turned_by_its_option(hw3_env) -> None:
    hw3_env.register(plugin, name="coral")
    mnist, rotated = hw3_env.load("mnist"), hw3_env.load("mnist-rotated")  # 45 degrees by default
    for split in ("train", "test"):
        assert rotated[split].images.shape == mnist[split].images.shape
        assert torch.equal(rotated[split].labels, mnist[split].labels)
        assert not torch.equal(rotated[split].images, mnist[split].images)
    hw3_env.registry("[datasets.mnist-rotated]\ndegrees = 90\n")  # as a user's HW3_REGISTRY file sets it
    quarter = hw3_env.load("mnist-rotated")["test"].images
    assert torch.equal(quarter, torch.rot90(mnist["test"].images, 1, dims=(2, 3)))  # 90 degrees is exact


def test_one_epoch_is_tracked_like_a_builtin_method(hw3_env) -> None:
    hw3_env.register(plugin, name="coral")
    result = hw3_env.run("coral", coral_weight=2.0)
    assert result.status == "FINISHED"
    for key in (
        "target_acc",
        "source_acc",
        "validator/im",
        "validator/entropy",
        "proxy_a_distance",
        "train/loss/coral",
    ):
        assert key in result.metrics
    run = hw3_env.mlflow_run(result.run_id)
    assert run.data.params["coral_weight"] == "2.0" and run.data.tags["method"] == "coral"
    figures = {a.path for a in hw3_env.client().list_artifacts(result.run_id, "figures")}
    assert {"figures/curves.png", "figures/confusion_target.png", "figures/confusion_source.png"} <= figures


def test_one_epoch_on_the_plugins_own_pair(hw3_env) -> None:
    hw3_env.register(plugin, name="coral")
    result = hw3_env.run("coral", pair="mnist:mnist-rotated", train_subset=256, test_subset=200)
    assert result.status == "FINISHED" and 0.0 <= result.metrics["target_acc"] <= 1.0


def test_the_entropy_validator_prefers_confident_predictions() -> None:
    from runner import ValidationData
    from runner.adapt import Outputs

    from hw3_coral.validators import TargetEntropy

    def score(logits: torch.Tensor) -> float:
        out = Outputs(torch.zeros(len(logits), 2), logits)
        return TargetEntropy().score(ValidationData(out, logits.argmax(1), out, None))

    sure = torch.eye(10).repeat(5, 1) * 20
    assert score(sure) == pytest.approx(0.0, abs=1e-6)
    assert score(torch.zeros(50, 10)) == pytest.approx(-np.log(10), abs=1e-6)
