"""The CLI through typer's CliRunner: listings, help, and one-line errors for bad input."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from runner.commands.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_sweep_and_reproduce_choose_the_device_as_run_does() -> None:
    for command in ("run", "sweep", "reproduce"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--device" in result.stdout and "cuda:N" in result.stdout, command


def test_help_lists_commands_and_run_options() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("list", "plugins", "show", "run"):
        assert command in result.stdout
    result = invoke("run", "--help")
    for option in (
        "--pair",
        "--dataset",
        "--device",
        "--epochs",
        "--seed",
        "--set",
        "--preset",
        "--experiment",
        "--run-name",
        "--data-root",
        "--resume",
    ):
        assert option in result.stdout


def test_list_shows_methods_datasets_pairs_presets() -> None:
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for text in ("baseline", "adapt", "mnist", "mnistm", "mnist:mnistm", "quick", "embedded"):
        assert text in result.stdout


def test_plugins_shows_builtins_with_version() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "hw3_register_methods" in result.stdout and "built-in" in result.stdout and "0.1.0" in result.stdout


def test_show_lists_keys_values_and_origins() -> None:
    result = invoke("show", "baseline", "--set", "lr=0.01")
    assert result.exit_code == 0, result.output
    assert "train_on" in result.stdout and "0.01" in result.stdout and "--set" in result.stdout


def test_show_with_the_paper_preset_names_every_difference_from_the_defaults() -> None:
    from runner.runs.plan import RunRequest, make_plan
    from runner.runs.plugins import get_manager

    default = make_plan(RunRequest("dann"), get_manager()).resolved.method_config
    paper = make_plan(RunRequest("dann", preset="paper"), get_manager()).resolved.method_config
    differ = [k for k in vars(default) if getattr(default, k) != getattr(paper, k)]
    assert {"optimizer", "lr", "batch_norm", "target_bn"} <= set(differ)  # the paper's SGD, no BN, no AdaBN
    result = invoke("show", "dann", "--preset", "paper")
    assert result.exit_code == 0, result.output
    assert f"{len(differ)} value(s) differ from the defaults: {', '.join(differ)}" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "nosuch"],
            "unknown method 'nosuch'; choose from: acgan, adamatch, adda, baseline, dann, gan, selfens",
        ),
        (["run", "baselin"], "did you mean 'baseline'"),
        (
            ["run", "baseline", "--pair", "mnist:nosuch"],
            "unknown dataset 'nosuch'; choose from: faces, mnist, mnistm, svhn, syndigits",
        ),
        (["run", "baseline", "--pair", "mnist"], "write SOURCE:TARGET"),
        (["run", "baseline", "--set", "nosuch=1"], "unknown config key 'nosuch'"),
        (["run", "baseline", "--set", "lr=abc"], "--set: lr='abc': expected a number"),
        (["run", "baseline", "--set", "train_on=all"], "must be one of source, target, both"),
        (["run", "baseline", "--preset", "nosuch"], "unknown preset 'nosuch'"),
        (["run", "baseline", "--device", "tpu"], "unknown device; use auto, cpu, cuda, cuda:N or mps"),
        (["run", "baseline", "--resume", "0123456789abcdef"], "--resume 0123456789abcdef: no such run"),
        (["run", "baseline", "--dataset", "mnist"], "use --pair SOURCE:TARGET, not --dataset"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


def test_cuda_on_a_machine_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("run", "baseline", "--device", "cuda")
    assert result.exit_code == 1
    assert "--device cuda: no CUDA device is available on this machine" in result.stderr
    assert "use --device cpu" in result.stderr
