"""Validators: the built-in scores, what each is given (target labels only for the oracle), the
registration contract, and a third party's validator logged by runs, chosen by, and listed."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from runner import ValidationData, Validator, hookimpl
from runner.adapt import Outputs
from runner.adapt.selection import select
from runner.adapt.validators import (
    BatchNuclearNorm,
    DeepEmbeddedValidation,
    InformationMaximization,
    Oracle,
    SoftNeighborhoodDensity,
    SourceAccuracy,
    builtin_validators,
)
from runner.commands.cli import app
from runner.plugins import get_manager, registered
from runner.validator import check_validator

TINY = ["--set=epochs=2", "--set=train_subset=256", "--set=test_subset=300", "--set=tsne_points=0"]


def data(
    target_logits: torch.Tensor,
    *,
    source_logits: torch.Tensor | None = None,
    source_labels: torch.Tensor | None = None,
    source_features: torch.Tensor | None = None,
    target_features: torch.Tensor | None = None,
    target_labels: torch.Tensor | None = None,
) -> ValidationData:
    n = len(target_logits)
    s_logits = source_logits if source_logits is not None else target_logits
    s_labels = source_labels if source_labels is not None else s_logits.argmax(1)
    fs = source_features if source_features is not None else torch.randn(len(s_logits), 8)
    ft = target_features if target_features is not None else torch.randn(n, 8)
    return ValidationData(Outputs(fs, s_logits), s_labels, Outputs(ft, target_logits), target_labels)


def confident(n: int, classes: int = 10, scale: float = 20.0) -> torch.Tensor:
    """Logits that put each row firmly on one class, every class used about equally."""
    return torch.nn.functional.one_hot(torch.arange(n) % classes, classes).float() * scale


def test_source_accuracy_and_the_oracle_count_right_answers() -> None:
    logits = confident(100)
    labels = torch.arange(100) % 10
    wrong = labels.clone()
    wrong[:30] = (wrong[:30] + 1) % 10
    assert SourceAccuracy().score(data(logits, source_labels=wrong)) == pytest.approx(0.7)
    assert Oracle().score(data(logits, target_labels=wrong)) == pytest.approx(0.7)


def test_im_and_bnm_prefer_confident_diverse_predictions_to_collapsed_or_unsure_ones() -> None:
    diverse = confident(200)
    collapsed = torch.zeros(200, 10)
    collapsed[:, 3] = 20.0  # confident, but every image in one class
    unsure = torch.zeros(200, 10)  # uniform
    for v in (InformationMaximization(), BatchNuclearNorm()):
        good, one_class, flat = (v.score(data(x)) for x in (diverse, collapsed, unsure))
        assert good > one_class + 0.1 * abs(good) and good > flat + 0.1 * abs(good), v.name
    assert InformationMaximization().score(data(diverse)) == pytest.approx(math.log(10), abs=1e-3)


def test_snd_is_the_entropy_of_each_points_neighbourhood() -> None:
    # Ten tight clusters of 20 points: each point's neighbours are the 19 others of its cluster,
    # equally similar, so its neighbourhood's entropy is log 19; one cluster of all: log 199.
    clustered = SoftNeighborhoodDensity().score(data(confident(200)))
    assert clustered == pytest.approx(math.log(19), abs=1e-2)
    one = torch.zeros(200, 10)
    one[:, 0] = 20.0
    assert SoftNeighborhoodDensity().score(data(one)) == pytest.approx(math.log(199), abs=1e-2)


def test_dev_weighs_the_source_loss_towards_target_like_images() -> None:
    g = torch.Generator().manual_seed(0)
    n = 400
    fs = torch.randn(n, 4, generator=g)
    fs[: n // 2, 0] += 3.0  # the first half of the source looks like the target
    ft = torch.randn(n, 4, generator=g)
    ft[:, 0] += 3.0
    labels = torch.arange(n) % 10
    right = confident(n)
    near_wrong = right.clone()
    near_wrong[: n // 2] = confident(n // 2).roll(1, dims=1)  # errors where the source is target-like
    far_wrong = right.clone()
    far_wrong[n // 2 :] = confident(n // 2).roll(1, dims=1)  # the same number of errors, far from it
    dev = DeepEmbeddedValidation()

    def score(logits: torch.Tensor) -> float:
        return dev.score(
            data(confident(n), source_logits=logits, source_labels=labels, source_features=fs, target_features=ft)
        )

    assert score(right) > score(far_wrong) > score(near_wrong)


def test_the_built_ins_pass_their_own_contract_and_the_oracle_alone_reads_target_labels() -> None:
    vs = builtin_validators()
    assert [v.name for v in vs] == ["source_val", "im", "snd", "bnm", "dev", "oracle"]
    assert all(check_validator(v) == "" for v in vs)
    assert [v.name for v in vs if v.uses_target_labels] == ["oracle"]


class _NoScore(Validator):
    name = "noscore"


class _Named(Validator):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def score(self, data: ValidationData) -> float:
        return 0.0


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (SourceAccuracy, "register an instance: register(SourceAccuracy())"),
        (object(), "not an instance of runner.Validator"),
        (_Named("Bad-Name"), "lower-case letters"),
        (_Named("last"), "reserved"),
        (_NoScore(), "does not define score"),
    ],
)
def test_registration_problems_are_named(obj: Any, says: str) -> None:
    assert says in check_validator(obj)


def test_selection_takes_each_validators_best_epoch_skipping_nan_and_preferring_later_ties() -> None:
    history = [
        {"target_acc": 0.5, "validator/a": 0.1, "validator/b": float("nan")},
        {"target_acc": 0.6, "validator/a": 0.3, "validator/b": 0.2},
        {"target_acc": 0.7, "validator/a": 0.3, "validator/b": 0.1},
    ]
    out = select(history)
    assert out["selected/a/epoch"] == 3.0 and out["selected/a/target_acc"] == 0.7 and out["selected/a/score"] == 0.3
    assert out["selected/b/epoch"] == 2.0 and out["selected/b/target_acc"] == 0.6
    assert out["selected/last/target_acc"] == 0.7


class Seen(Validator):
    """A third party's validator: the share of target predictions in class 0, recording what it got."""

    name = "zeros"
    description = "share of target predictions in class 0"
    got: list[ValidationData] = []

    def score(self, data: ValidationData) -> float:
        Seen.got.append(data)
        return float((data.target.logits.argmax(1) == 0).float().mean())


class Plugin:
    @hookimpl
    def hw3_register_validators(self, register: Any) -> None:
        register(Seen())


def test_a_third_party_validator_is_listed_logged_selected_and_never_sees_target_labels(client) -> None:
    Seen.got.clear()
    with registered(Plugin(), "zeros-plugin"):
        listed = CliRunner().invoke(app, ["list"])
        assert listed.exit_code == 0 and "zeros" in listed.output and "share of target predictions" in listed.output
        result = CliRunner().invoke(app, ["run", "dann", *TINY])
        assert result.exit_code == 0, result.output
    assert len(Seen.got) == 2 and all(d.target_labels is None for d in Seen.got)
    assert all(d.source_labels is not None and len(d.target.logits) == len(d.target.features) for d in Seen.got)
    run_id = result.output.split(" run ")[1].split()[0]
    metrics = client.get_run(run_id).data.metrics
    assert [m.value for m in client.get_metric_history(run_id, "validator/zeros")] == [
        pytest.approx(float((d.target.logits.argmax(1) == 0).float().mean())) for d in Seen.got
    ]
    assert "selected/zeros/target_acc" in metrics and "validator/oracle" in metrics and "validator/snd" in metrics
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert "figures/validators.png" in figures  # every validator's curve, its pick marked


class Raises(Validator):
    name = "raises"

    def score(self, data: ValidationData) -> float:
        raise ValueError("boom")


class RaisingPlugin:
    @hookimpl
    def hw3_register_validators(self, register: Any) -> None:
        register(Raises())


def test_a_validator_that_raises_fails_the_run_with_its_name() -> None:
    with registered(RaisingPlugin(), "raising"):
        result = CliRunner().invoke(app, ["run", "baseline", *TINY])
    assert result.exit_code == 1
    assert "validator 'raises' raised ValueError: boom" in result.output


def test_a_misregistered_validator_is_a_plugin_error_not_a_crash() -> None:
    class Bad:
        @hookimpl
        def hw3_register_validators(self, register: Any) -> None:
            register(SourceAccuracy)

    with registered(Bad(), "bad-validators"):
        manager = get_manager()
        assert "source_val" in manager.validators()  # the built-in one, still there
        assert any("register an instance" in line for line in manager.problems())
