"""`hw3 tune`: the space checked up front, a study of trials as MLflow child runs, pruning, a
failed or interrupted trial, resuming, and the reality check on the parent run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from runner import record
from runner.commands.cli import app
from runner.errors import RunFailed, RunInterrupted
from runner.runs.tune import reality, views
from runner.runs.tune.reality import TrialRow

TINY = ["--set=epochs=2", "--set=train_subset=256", "--set=test_subset=300", "--set=log_every=4"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def study_of(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def tune_args(tmp_path: Path, *more: str, trials: int = 3, study: str | None = None) -> list[str]:
    name = study or f"t-{uuid.uuid4().hex[:8]}"
    return [
        "tune", "dann", "--space", "lr=1e-3..5e-3:log", "--space", "dropout=0..0.5", "--trials", str(trials),
        "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--study", name, "--experiment", f"tune-{name}",
        *TINY, *more,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ("lr", "write KEY=LOW..HIGH[:log] or KEY=A,B,C"),
        ("lrr=1e-4..1e-2", "unknown config key 'lrr' for method 'dann' (did you mean 'lr'?)"),
        ("seed=0..3", "seeds are not searched"),
        ("lr=1e-2..1e-4", "the low end 0.01 must be below the high end 0.0001"),
        ("lr=0..1e-2:log", "a :log range needs a low end above 0"),
        ("lr=1e-4..1e-2:ln", "':ln' is not a scale"),
        ("lr=abc..1", "--space lr (its low end)='abc'"),
        ("disc_norm=0..1", "'disc_norm' is not a number"),
        ("disc_norm=bn", "give two or more values"),
        ("disc_norm=bn,layer", "must be one of"),
        ("dropout=0..1.5", "--space dropout=0..1.5: dropout=1.5"),
        ("augment=true,yes", "'true' and 'yes' are the same value"),
    ],
)
def test_every_value_of_the_space_is_checked_before_the_first_trial(tmp_path: Path, space: str, says: str) -> None:
    result = invoke("tune", "dann", "--space", space, "--storage", f"sqlite:///{tmp_path / 'o.db'}", *TINY)
    assert result.exit_code == 1
    assert says in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "o.db").exists()  # nothing made


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--select", "imm"], "--select: unknown validator 'imm' (did you mean 'im'?)"),
        (["--set", "dropout=0.1"], "'dropout' is in both --set and --space"),
        (["--trials", "0"], "--trials 0: must be at least 1"),
        (["--set", "val_fraction=0"], "give --set val_fraction above 0"),
        (["--storage", "redis://x"], "give a database URL"),
    ],
)
def test_other_mistakes_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = invoke("tune", "dann", "--space", "dropout=0..0.5", *TINY, *args)
    assert result.exit_code == 1 and says in result.output, result.output


def test_generative_methods_are_not_tuned_by_validators() -> None:
    result = invoke("tune", "gan", "--space", "lr=1e-4..1e-3", "--set", "epochs=1")
    assert result.exit_code == 1 and "adaptation methods" in result.output


def test_a_study_runs_its_trials_as_child_runs_and_ends_with_the_reality_check(client, tmp_path: Path) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    result = invoke(*tune_args(tmp_path, study=name))
    assert result.exit_code == 0, result.output
    assert "reality check: 3 finished trials" in result.output and "oracle" in result.output

    study = study_of(f"sqlite:///{tmp_path / 'optuna.db'}", name)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].user_attrs["hw3.defaults"] and trials[0].params == {"lr": 3e-3, "dropout": 0.5}
    assert len({tuple(t.params.values()) for t in trials}) == 3

    exp = client.get_experiment_by_name(f"tune-{name}")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get(record.TUNE) == "true")
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and parent.data.tags[record.SELECT] == "im"
    assert sorted(int(c.data.tags[record.TRIAL]) for c in children) == [0, 1, 2]
    for c, t in zip(sorted(children, key=lambda c: int(c.data.tags[record.TRIAL])), trials, strict=True):
        assert c.data.tags[record.MLFLOW_PARENT] == parent.info.run_id
        assert t.user_attrs["hw3.runs"] == [c.info.run_id]
        # The trial's value is the validator's score at the epoch it chose, as the run logged it.
        assert t.value == pytest.approx(record.selection(c)["selected/im/score"])
        assert float(c.data.params["lr"]) == pytest.approx(t.params["lr"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tune.md", "tune.json", "figures"} <= artifacts
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/tune_im.png", "figures/tune_oracle.png", "figures/tune_snd.png"} <= figures
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "tune.json", str(tmp_path))).read_text())
    oracle = next(v for v in table["validators"] if v["name"] == "oracle")
    best_val = max(
        children, key=lambda c: (record.selection(c)["selected/oracle/score"], -int(c.data.tags[record.TRIAL]))
    )
    assert oracle["chosen_target_acc"] == pytest.approx(record.selection(best_val)["selected/oracle/target_acc"])
    assert parent.data.metrics["tune/trials_finished"] == 3

    again = invoke("report", "--tune", parent.info.run_id, "--out", str(tmp_path / "rep"))
    assert again.exit_code == 0, again.output
    assert "reality check: 3 finished trials" in again.output
    assert (tmp_path / "rep" / "tune.md").read_text().count("| ") > 10 and (tmp_path / "rep" / "tune_im.png").exists()

    # A second invocation joins the study and runs only what is missing, under the same parent.
    more = invoke(*tune_args(tmp_path, trials=4, study=name))
    assert more.exit_code == 0, more.output
    assert "joined study" in more.output and "3 of 4 trials done" in more.output
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    runs = client.search_runs([exp.experiment_id])
    assert len([r for r in runs if r.data.tags.get(record.TUNE) == "true"]) == 1 and len(runs) == 5


def test_joining_a_study_that_searches_something_else_is_refused(tmp_path: Path) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    assert invoke(*tune_args(tmp_path, trials=1, study=name)).exit_code == 0
    other = tune_args(tmp_path, trials=2, study=name)
    other[other.index("dropout=0..0.5")] = "dropout=0..0.6"
    result = invoke(*other)
    assert result.exit_code == 1 and f"study '{name}' searches something else" in result.output


def test_pruned_failed_and_interrupted_trials(monkeypatch: pytest.MonkeyPatch, client, tmp_path: Path) -> None:
    """Trial 1 is pruned after its first epoch, trial 2's run fails (skipped, the study goes on),
    trial 3 is interrupted (FAIL, its values queued again); a second invocation finishes the study."""
    import runner.runs.execute

    real = runner.runs.execute.execute
    calls: list[int] = []

    def execute(req, console=None, *, early_stop=None):
        n = req.trial.number
        calls.append(n)
        if n == 2:
            raise RunFailed("loss became nan")
        if n == 3 and calls.count(3) == 1:
            raise RunInterrupted("interrupted after epoch 1")
        if n == 1:
            assert early_stop is not None

            def prune_now(ctx, metrics):
                early_stop(ctx, metrics)  # still reports the score to the study
                return "pruned for the test"

            return real(req, console, early_stop=prune_now)
        return real(req, console, early_stop=early_stop)

    monkeypatch.setattr(runner.runs.execute, "execute", execute)
    name = f"s-{uuid.uuid4().hex[:8]}"
    first = invoke(*tune_args(tmp_path, trials=4, study=name))
    assert first.exit_code == 130, first.output
    assert "run the same command to resume it" in first.output
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    states = [t.state for t in study_of(storage, name).get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]

    second = invoke(*tune_args(tmp_path, trials=4, study=name))
    assert second.exit_code == 0, second.output
    trials = study_of(storage, name).get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]  # fmt: skip
    assert trials[4].params == trials[3].params and trials[4].user_attrs["hw3.retry_of"] == 3
    assert "1 pruned" in second.output

    pruned_run = client.get_run(trials[1].user_attrs["hw3.runs"][0])
    assert pruned_run.info.status == "FINISHED"
    assert pruned_run.data.tags[record.STOPPED_EARLY].startswith("after epoch 1: pruned for the test")
    assert len(client.get_metric_history(pruned_run.info.run_id, "target_acc")) == 1
    assert trials[1].intermediate_values == {1: pytest.approx(pruned_run.data.metrics["validator/im"])}


def rows(*specs: tuple[float, float, float, float]) -> list[TrialRow]:
    """Trials from (im score, im's target acc, oracle score, oracle's target acc); the first is the defaults."""
    return [
        TrialRow(i, {}, [f"r{i}"], defaults=i == 0, score={"im": s, "oracle": o}, acc={"im": a, "oracle": oa})
        for i, (s, a, o, oa) in enumerate(specs)
    ]


def test_the_reality_check_says_plainly_when_a_validator_misleads() -> None:
    trials = rows((0.1, 0.80, 0.81, 0.80), (0.3, 0.60, 0.62, 0.61), (0.2, 0.90, 0.91, 0.90))
    trials.append(
        TrialRow(3, {}, ["r3"], pruned=True, score={"im": 9.0, "oracle": 1.0}, acc={"im": 1.0, "oracle": 1.0})
    )
    rc = reality.check("p", "im", trials, ["im", "oracle"])
    im, oracle = rc.verdicts
    assert im.chosen is not None and im.chosen.number == 1  # the pruned trial is never chosen
    assert im.chosen_acc == 0.60 and rc.oracle_acc == 0.90 and im.gap == pytest.approx(-30.0)
    assert im.defaults_acc == 0.80 and im.rho == pytest.approx(-0.5)
    assert im.says() == (
        "misleads: 30.0 points below the oracle's choice; 20.0 below the defaults; "
        "ranks the trials against their accuracy"
    )
    assert oracle.says().startswith("uses target labels")
    good = reality.check("p", "im", rows((0.1, 0.80, 0.8, 0.8), (0.2, 0.895, 0.9, 0.9)), ["im", "oracle"])
    assert good.verdicts[0].says() == "close to the oracle" and good.verdicts[0].rho is None  # two trials: no rho
    assert "(1 pruned, left out)" in views.headline(rc)


def test_a_choice_matches_the_config_value_it_names() -> None:
    from plugins.methods.dann import Dann
    from runner.runs.tune.space import parse_space

    dims = {d.key: d for d in parse_space(["augment=False,true", "dropout=0.,.5"], Dann, "dann")}
    assert dims["augment"].choice_for(True) == "true" and dims["augment"].choice_for(False) == "False"
    assert dims["dropout"].choice_for(0.5) == ".5" and dims["dropout"].choice_for(0.25) is None
    assert not dims["dropout"].contains(0.25)


def test_a_storage_url_is_shown_without_its_password() -> None:
    from runner.runs.tune.study import redact_url

    assert redact_url("postgresql://hw3:s3cret@db:5432/tune") == "postgresql://hw3:***@db:5432/tune"
    assert redact_url("sqlite:///optuna.db") == "sqlite:///optuna.db"


def test_a_study_chosen_by_ensv_scores_each_trial_against_those_before_it_and_again_at_the_end(
    client, tmp_path: Path
) -> None:
    from runner.adapt.validators import EnsembleValidation
    from runner.store import reader

    name = f"s-{uuid.uuid4().hex[:8]}"
    result = invoke(*tune_args(tmp_path, "--select", "ensv", study=name))
    assert result.exit_code == 0, result.output
    trials = study_of(f"sqlite:///{tmp_path / 'optuna.db'}", name).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(not t.intermediate_values for t in trials)  # no per-epoch score: nothing to prune by
    runs = {t.number: t.user_attrs["hw3.runs"] for t in trials}
    tracker = reader()
    # What TPE was told: each trial against the ensemble of the trials finished before it and itself.
    assert trials[0].value == 1.0  # alone, it agrees with itself
    for t in trials:
        before = {n: r for n, r in runs.items() if n <= t.number}
        assert t.value == pytest.approx(reality.candidate_scores(tracker, EnsembleValidation(), before)[t.number])

    # The reality check scores every finished trial against all of them, at their last epoch.
    final = reality.candidate_scores(tracker, EnsembleValidation(), runs)
    exp = client.get_experiment_by_name(f"tune-{name}")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(record.TUNE) == "true")
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "tune.json", str(tmp_path))).read_text())
    assert table["select"] == "ensv" and table["study_level"] == ["ensv"]
    verdicts = {v["name"]: v for v in table["validators"]}
    assert {"ensv", "reverse", "im", "oracle"} <= set(verdicts) and all(v["says"] for v in verdicts.values())
    chosen = max(final, key=lambda n: (final[n], -n))
    assert verdicts["ensv"]["chosen_trial"] == chosen
    last = record.selection(client.get_run(runs[chosen][0]))["selected/last/target_acc"]
    assert verdicts["ensv"]["chosen_target_acc"] == pytest.approx(last)
    assert {t["number"]: t["score"]["ensv"] for t in table["trials"]} == pytest.approx(final)
    assert "ensv (searched)" in result.output and "reverse" in result.output
    assert (
        "ensemble of all of"
        in Path(client.download_artifacts(parent.info.run_id, "tune.md", str(tmp_path))).read_text()
    )
    again = invoke("report", "--tune", parent.info.run_id, "--out", str(tmp_path / "rep"))
    assert again.exit_code == 0 and (tmp_path / "rep" / "tune_ensv.png").exists()


def test_a_study_chosen_by_reverse_validation(client, tmp_path: Path) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    result = invoke(*tune_args(tmp_path, "--select", "reverse", trials=2, study=name))
    assert result.exit_code == 0, result.output
    trials = study_of(f"sqlite:///{tmp_path / 'optuna.db'}", name).get_trials()
    for t in trials:
        run = client.get_run(t.user_attrs["hw3.runs"][0])
        assert t.value == pytest.approx(record.selection(run)["selected/reverse/score"])
        assert t.intermediate_values  # a score each epoch: the pruner can read it
    assert "reverse (searched)" in result.output and "ensv" in result.output
