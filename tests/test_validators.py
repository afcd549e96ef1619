"""Validators: the built-in scores, what each is given (target labels only for the oracle), the
registration contract, and a third party's validator logged by runs, chosen by, and listed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from runner import Candidate, StudyValidator, ValidationData, Validator, hookimpl, record
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
from runner.errors import RunInterrupted
from runner.runs.plugins import get_manager, registered
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
    assert [v.name for v in vs] == ["source_val", "im", "snd", "bnm", "dev", "reverse", "ensv", "oracle"]
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
    run_id = re.search(r"\brun ([0-9a-f]{32})\s+experiment", result.output).group(1)  # the run's header line
    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert [m.value for m in client.get_metric_history(run_id, "validator/zeros")] == [
        pytest.approx(float((d.target.logits.argmax(1) == 0).float().mean())) for d in Seen.got
    ]
    assert "selected/zeros/target_acc" in record.selection(run) and "validator/oracle" in metrics
    assert "validator/snd" in metrics
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


# -- validators that see a permutation of the classes: reverse (anchored) and EnsV (study-level) ----
def tiny_domains() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source images, source labels, target images, target labels): 300 real MNIST digits and 300
    others in random colours (runner.testing's tiny pair), as validation splits, 3 channels each."""
    from runner.testing import TINY_DATASETS

    source, target = (spec.build(None)["train"] for spec in TINY_DATASETS)
    return source.images.expand(-1, 3, -1, -1).contiguous(), source.labels, target.images, target.labels


def noisy_logits(labels: torch.Tensor, wrong: float, seed: int) -> torch.Tensor:
    """Predictions of a fair candidate: `wrong` of the labels changed to another class, each row's
    confidence the lower the more it errs (as a worse model is less sure)."""
    g = torch.Generator().manual_seed(seed)
    pred = labels.clone()
    flip = torch.rand(len(labels), generator=g) < wrong
    pred[flip] = (pred[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=g)) % 10
    return torch.nn.functional.one_hot(pred, 10).float() * (8.0 - 10 * wrong) + 0.3 * torch.randn(
        len(labels), 10, generator=g
    )


def ranks_last(scores: list[float], i: int) -> bool:
    return all(scores[i] < s for j, s in enumerate(scores) if j != i)


def test_ensv_and_reverse_rank_a_permuted_candidate_last_while_im_does_not() -> None:
    from runner.adapt.validators import EnsembleValidation, ReverseValidation

    xs, ys, xt, yt = tiny_domains()
    good = [noisy_logits(yt, wrong, seed) for seed, wrong in enumerate((0.05, 0.1, 0.15, 0.2))]
    perm = torch.tensor([3, 7, 0, 9, 1, 8, 2, 5, 6, 4])  # no class keeps its label
    permuted = good[0][:, perm.argsort()]  # class k's column moved to perm[k]: the best candidate, relabelled
    assert (permuted.argmax(1) == perm[good[0].argmax(1)]).all()
    candidates = [*good, permuted]
    p = len(candidates) - 1

    def for_run(logits: torch.Tensor) -> ValidationData:
        return ValidationData(
            Outputs(torch.zeros(len(ys), 4), torch.zeros(len(ys), 10)),
            ys,
            Outputs(torch.zeros(len(yt), 4), logits),
            None,
            seed=0,
            source_images=xs,
            target_images=xt,
        )

    im = [InformationMaximization().score(data(c)) for c in candidates]
    assert im[p] == pytest.approx(im[0], abs=1e-5)  # IM cannot tell a relabelling from the right labels
    assert not ranks_last(im, p) and im[p] >= max(im[1:p])
    ensv = EnsembleValidation().score_candidates([Candidate(c.softmax(1)) for c in candidates])
    assert ranks_last(ensv, p) and ensv[p] < 0.2 and min(ensv[:p]) > 0.7
    reverse = [ReverseValidation().score(for_run(c)) for c in candidates]
    assert ranks_last(reverse, p) and reverse[p] < 0.2 and min(reverse[:p]) > 0.4, reverse
    # Deterministic, from the run's seed; and no images: no score, never chosen.
    assert ReverseValidation().score(for_run(good[1])) == reverse[1]
    assert math.isnan(ReverseValidation().score(data(good[0])))


def test_ensv_scores_agreement_with_the_candidates_mean_prediction() -> None:
    from runner.adapt.validators import EnsembleValidation

    a = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    b = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.2, 0.8]])
    c = torch.tensor([[0.1, 0.9], [0.7, 0.3], [0.6, 0.4], [0.4, 0.6]])
    # The mean prediction's argmax: 0, 0, 1, 1; a agrees on all four, b on three, c on two.
    assert EnsembleValidation().score_candidates([Candidate(x) for x in (a, b, c)]) == [1.0, 0.75, 0.5]
    with pytest.raises(ValueError, match="different splits"):
        EnsembleValidation().score_candidates([Candidate(a), Candidate(a[:3])])


def test_selection_by_scores_computed_together_prefers_later_ties_and_skips_nan() -> None:
    from runner.adapt.selection import select_scored

    history = [{"target_acc": 0.1}, {"target_acc": 0.2}, {"target_acc": 0.3}]
    assert select_scored(history, "ensv", [1, 2, 3], [0.9, 0.9, float("nan")]) == {
        "selected/ensv/epoch": 2.0,
        "selected/ensv/score": 0.9,
        "selected/ensv/target_acc": 0.2,
    }
    assert select_scored(history, "ensv", [3], [float("nan")]) == {}


class _NoCandidates(StudyValidator):
    name = "nocand"


class _OracleTogether(StudyValidator):
    name = "oracle_together"
    uses_target_labels = True

    def score_candidates(self, candidates: Any) -> list[float]:
        return [0.0 for _ in candidates]


def test_a_study_validator_must_score_candidates_and_cannot_read_target_labels() -> None:
    assert "does not define score_candidates" in check_validator(_NoCandidates())
    assert "cannot use target labels" in check_validator(_OracleTogether())


class AgreesWithLast(StudyValidator):
    """A third party's study-level validator: each candidate's agreement with the last one."""

    name = "agrees_last"
    description = "agreement with the last candidate"
    got: list[list[Any]] = []

    def score_candidates(self, candidates: Any) -> list[float]:
        AgreesWithLast.got.append(list(candidates))
        last = candidates[-1].target_probs.argmax(1)
        return [float((c.target_probs.argmax(1) == last).float().mean()) for c in candidates]


class TogetherPlugin:
    @hookimpl
    def hw3_register_validators(self, register: Any) -> None:
        register(AgreesWithLast())


def test_a_run_saves_its_target_predictions_and_selects_by_study_validators_among_its_epochs(
    client, tmp_path: Path
) -> None:
    from runner.adapt.selection import decode_predictions
    from runner.adapt.validators import EnsembleValidation
    from runner.store import reader

    AgreesWithLast.got.clear()
    with registered(TogetherPlugin(), "together-plugin"):
        listed = CliRunner().invoke(app, ["list"])
        assert listed.exit_code == 0 and "agrees_last" in listed.output and "candidates together" in listed.output
        result = CliRunner().invoke(app, ["run", "dann", *TINY])
        assert result.exit_code == 0, result.output
    run_id = re.search(r"\brun ([0-9a-f]{32})\s+experiment", result.output).group(1)  # the run's header line
    run = client.get_run(run_id)
    saved = decode_predictions(reader().read_bytes(run_id, record.TARGET_VAL_PREDICTIONS) or b"")
    assert saved.epochs == [1, 2] and saved.probs.dtype == "float16" and saved.probs.shape[0] == 2
    assert saved.probs.shape[2] == 10 and abs(saved.probs.astype("float32").sum(2) - 1).max() < 1e-2
    # The same images for every run (the held-out split is fixed): what lets a study compare runs.
    assert len(saved.images) == 16

    # EnsV among the run's epochs, from what it saved; no per-epoch value (it has none).
    scores = EnsembleValidation().score_candidates([Candidate(torch.from_numpy(p).float()) for p in saved.probs])
    best = max(range(2), key=lambda i: (scores[i], i))
    m = record.selection(run)  # tags, and one table, not one-point metrics before the curves
    assert not any(k.startswith("selected/") for k in run.data.metrics)
    table = json.loads(Path(client.download_artifacts(run_id, record.SELECTION_TABLE, str(tmp_path))).read_text())
    assert {row[0] for row in table["data"]} >= {"last", "ensv", "reverse", "agrees_last", "im"}
    assert m["selected/ensv/epoch"] == best + 1 and m["selected/ensv/score"] == pytest.approx(scores[best])
    history = client.get_metric_history(run_id, "target_acc")
    assert m["selected/ensv/target_acc"] == pytest.approx(sorted(history, key=lambda h: h.step)[best].value)
    assert "validator/ensv" not in run.data.metrics and not client.get_metric_history(run_id, "validator/ensv")
    assert len(client.get_metric_history(run_id, "validator/reverse")) == 2 and "selected/reverse/epoch" in m
    # A third party's study validator: given the epochs' predictions once, at the end.
    assert len(AgreesWithLast.got) == 1 and [c.name for c in AgreesWithLast.got[0]] == ["epoch 1", "epoch 2"]
    assert m["selected/agrees_last/epoch"] == 2.0 and m["selected/agrees_last/score"] == 1.0
    assert "figures/validators.png" in {a.path for a in client.list_artifacts(run_id, "figures")}

    report = CliRunner().invoke(app, ["report", "--protocol", "ensv", "--out", "rep"])
    assert report.exit_code == 0, report.output
    assert "best ensv" in report.output and "DANN" in report.output


def test_a_resumed_run_saves_every_epochs_predictions() -> None:
    import io

    from helpers import Recorder
    from rich.console import Console

    from runner.adapt.selection import decode_predictions
    from runner.runs.execute import RunRequest, execute
    from runner.store import reader

    def quiet(req: RunRequest) -> Any:
        return execute(req, Console(file=io.StringIO()))

    settings = [("train_subset", "256"), ("test_subset", "200"), ("epochs", "2"), ("tsne_points", "0")]
    whole = quiet(RunRequest("baseline", overrides=settings))
    recorder = Recorder(interrupt_after=1)
    with registered(recorder, name="recorder"), pytest.raises(RunInterrupted):
        quiet(RunRequest("baseline", overrides=settings))
    resumed = quiet(RunRequest("baseline", resume=recorder.calls[0][1]))
    assert resumed.metrics == whole.metrics  # reverse and ensv's selections among them
    tracker = reader()
    a, b = (
        decode_predictions(tracker.read_bytes(r.run_id, record.TARGET_VAL_PREDICTIONS) or b"") for r in (whole, resumed)
    )
    assert a.epochs == b.epochs == [1, 2] and (a.probs == b.probs).all() and a.images == b.images
