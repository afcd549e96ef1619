"""Adaptation methods and what they share: gradient reversal, schedules, evaluation protocols."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import MethodsPlugin

from plugins.methods.adda import Adda
from plugins.methods.dann import annealed_lr, grl_lambda
from runner import record
from runner.adapt import grad_reverse, information_maximization, proxy_a_distance
from runner.adapt.selection import select
from runner.errors import RunInterrupted
from runner.runs.execute import RunRequest, execute
from runner.runs.plugins import registered

SMALL = [("train_subset", "512"), ("test_subset", "400"), ("log_every", "4")]


def quiet(req: RunRequest):
    import io

    from rich.console import Console

    return execute(req, Console(file=io.StringIO()))


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(5, 3))


def test_dann_paper_schedules() -> None:
    assert grl_lambda(0.0, 1.0, True) == 0.0
    assert grl_lambda(1.0, 1.0, True) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_lambda(0.3, 0.5, False) == 0.5
    assert annealed_lr(0.01, 0.0) == 0.01
    assert annealed_lr(0.01, 1.0) == pytest.approx(0.01 / 11**0.75)


def test_selection_reports_each_protocol_with_its_epoch() -> None:
    history = [  # each validator reads validation metrics; the test accuracy is only reported
        {"target_acc": 0.50, "validator/source_val": 0.90, "validator/im": 1.0, "validator/oracle": 0.55},
        {"target_acc": 0.70, "validator/source_val": 0.95, "validator/im": 1.2, "validator/oracle": 0.60},  # source
        {"target_acc": 0.80, "validator/source_val": 0.93, "validator/im": 1.5, "validator/oracle": 0.65},  # IM
        {"target_acc": 0.60, "validator/source_val": 0.92, "validator/im": 1.1, "validator/oracle": 0.70},  # oracle
    ]
    out = select(history)
    assert out["selected/last/target_acc"] == 0.60 and out["selected/last/epoch"] == 4
    assert out["selected/source_val/target_acc"] == 0.70 and out["selected/source_val/epoch"] == 2
    assert out["selected/im/target_acc"] == 0.80 and out["selected/im/epoch"] == 3
    assert out["selected/oracle/target_acc"] == 0.60 and out["selected/oracle/epoch"] == 4
    assert not any("test" in key for key in out)  # nothing chooses by the test labels
    assert select([]) == {}


def test_information_maximization_prefers_confident_diverse_predictions() -> None:
    confident_diverse = torch.eye(10).repeat(5, 1) * 20
    collapsed = torch.zeros(50, 10)
    collapsed[:, 3] = 20
    uncertain = torch.zeros(50, 10)
    assert information_maximization(confident_diverse) == pytest.approx(math.log(10), abs=1e-3)
    assert information_maximization(collapsed) < 0.01
    assert information_maximization(uncertain) == pytest.approx(0.0, abs=1e-5)


def test_proxy_a_distance_from_indistinguishable_to_separable() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    assert proxy_a_distance(a, b) < 0.3
    assert proxy_a_distance(a, b + 5) > 1.9


def test_dann_run_logs_shared_metrics_protocols_and_tsne(client) -> None:
    result = quiet(RunRequest("dann", overrides=[*SMALL, ("epochs", "2"), ("tsne_points", "200")]))
    assert result.status == "FINISHED"
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    for key in (
        "target_acc",
        "source_acc",
        "validator/im",
        "validator/snd",
        "validator/bnm",
        "validator/dev",
        "validator/oracle",
        "domain_acc",
        "proxy_a_distance",
        "step/loss/domain",
        "source_val_acc",
        "target_val_acc",
        "train/lambda",
    ):
        assert key in metrics, key
    picked = record.selection(run)  # each protocol's epoch: tags (and a table), not metrics
    for key in (
        "selected/source_val/target_acc",
        "selected/im/epoch",
        "selected/oracle/target_acc",
        "selected/dev/score",
    ):
        assert key in picked and key not in metrics, key
    assert picked["selected/im/target_acc"] == result.metrics["selected/im/target_acc"]
    assert 0 <= metrics["proxy_a_distance"] <= 2
    figures = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    assert {"figures/tsne_class.png", "figures/tsne_domain.png", "figures/confusion_target.png"} <= figures
    assert run.data.tags["selection"] == "last"


class Spy(Adda):
    """ADDA, keeping a copy of the source network when adaptation starts."""

    name = "adda-spy"
    seen: dict = {}

    def train_step(self, ctx, batch):
        out = super().train_step(ctx, batch)
        if self.adapting and "source" not in Spy.seen:
            Spy.seen["source"] = {k: v.clone() for k, v in self.net.state_dict().items()}
        Spy.seen["method"] = self
        return out


@pytest.mark.parametrize(
    ("align", "width", "im_weight"), [("penultimate", 100, "0"), ("features", 768, "0"), ("penultimate", 100, "1")]
)
def test_adda_freezes_the_source_and_moves_the_target_encoder(align: str, width: int, im_weight: str) -> None:
    # With im_weight the loss reaches the target encoder through the source classifier: it must stay frozen.
    Spy.seen.clear()
    overrides = [
        *SMALL,
        *[("epochs", "2"), ("pretrain_epochs", "1"), ("tsne_points", "0"), ("align", align), ("im_weight", im_weight)],
    ]
    with registered(MethodsPlugin(Spy), name="spy"):
        result = quiet(RunRequest("adda-spy", overrides=overrides))
    assert result.status == "FINISHED"
    method = Spy.seen["method"]
    after = method.net.state_dict()
    for key, before in Spy.seen["source"].items():
        assert torch.equal(before, after[key]), f"source parameter {key} changed during adaptation"
    target = method.target if align == "features" else method.target[0]
    assert not torch.equal(method.net.features[0].weight, target[0].weight)  # the target encoder was trained
    assert method.discriminator[0].in_features == width  # it sees what the target encoder makes
    assert "target_net" not in method.state_dict() and "source_encoder" not in method.state_dict()


def test_with_statistics_of_gives_a_copy_holding_the_splits_batch_norm_statistics() -> None:
    from contextlib import nullcontext
    from types import SimpleNamespace

    from runner.adapt import with_statistics_of
    from runner.data import Split, batches

    # dropout before the batch norm: it must stay off while statistics are gathered
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Dropout2d(0.5), torch.nn.BatchNorm2d(4))
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(100, 256, (256, 1, 8, 8), generator=gen, dtype=torch.uint8), torch.zeros(256).long())
    ctx = SimpleNamespace(autocast=nullcontext)
    rng = torch.get_rng_state()
    twin = with_statistics_of(net, split, ctx)
    assert torch.equal(torch.get_rng_state(), rng)  # the training's random stream is left alone
    with torch.no_grad():
        expected = torch.cat([net[0](x) for x, _ in batches(split, 64)]).mean((0, 2, 3))
    assert torch.allclose(twin[2].running_mean, expected, atol=1e-5)
    assert torch.equal(net[2].running_mean, torch.zeros(4))  # the original keeps its own
    assert not twin.training and net.training


def test_update_average_moves_weights_part_way_and_copies_statistics() -> None:
    from runner.adapt import averaged_copy, update_average

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    avg = averaged_copy(net)
    assert not any(p.requires_grad for p in avg.parameters())
    before = avg[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net(torch.randn(8, 3))  # new batch-norm statistics
    update_average(avg, net, decay=0.75)
    assert torch.allclose(avg[0].weight, before + 0.25)  # a quarter of the way to the new weights
    assert torch.equal(avg[1].running_mean, net[1].running_mean)


def test_dann_evaluates_the_moving_average_of_its_weights(client) -> None:
    one = [*SMALL, ("epochs", "2"), ("tsne_points", "0")]
    trained = quiet(RunRequest("dann", overrides=[*one, ("weight_average", "0")])).metrics
    frozen = quiet(RunRequest("dann", overrides=[*one, ("weight_average", "0.999999")])).metrics
    assert trained["source_acc"] > 0.5  # the weights as trained have learned the source
    assert frozen["source_acc"] < 0.3  # an average that barely leaves the initial weights has not


def test_dann_information_maximisation_makes_target_predictions_confident_and_diverse(client) -> None:
    # The trained weights, not their slow moving average, which barely leaves the start in 16 steps.
    two = [*SMALL, ("epochs", "2"), ("tsne_points", "0"), ("weight_average", "0")]
    plain = quiet(RunRequest("dann", overrides=two)).metrics
    im = quiet(RunRequest("dann", overrides=[*two, ("im_weight", "3")])).metrics
    assert im["validator/im"] > plain["validator/im"] + 0.2  # the evaluation measures what the term optimises


def test_information_maximization_objective_is_the_score_and_carries_gradients() -> None:
    from runner.adapt import information_maximization_objective

    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # entropies 0 and log 2; mean prediction (0.75, 0.25)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) - math.log(2) / 2
    assert float(information_maximization_objective(p)) == pytest.approx(expected, abs=1e-6)
    logits = torch.randn(8, 10, requires_grad=True)
    objective = information_maximization_objective(logits.softmax(1))
    objective.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert information_maximization(logits) == pytest.approx(float(objective))


def test_dann_target_statistics_change_target_accuracy_only_and_resume_exactly(client) -> None:
    from helpers import Recorder

    three = [*SMALL, ("epochs", "3"), ("tsne_points", "0")]
    whole = quiet(RunRequest("dann", overrides=three))
    mixed = quiet(RunRequest("dann", overrides=[*three, ("target_bn", "false")]))
    assert mixed.metrics["source_acc"] == whole.metrics["source_acc"]  # source images: the same network
    assert mixed.metrics["target_acc"] != whole.metrics["target_acc"]
    recorder = Recorder(interrupt_after=1)
    with registered(recorder, name="recorder"), pytest.raises(RunInterrupted):
        quiet(RunRequest("dann", overrides=three))
    resumed = quiet(RunRequest("dann", resume=recorder.calls[0][1]))
    assert resumed.metrics == whole.metrics


def test_adda_can_start_from_a_finished_baseline_run(client) -> None:
    base = quiet(RunRequest("baseline", overrides=[*SMALL, ("epochs", "1"), ("tsne_points", "0")]))
    adda = quiet(
        RunRequest("adda", overrides=[*SMALL, ("epochs", "1"), ("source_run", base.run_id), ("tsne_points", "0")])
    )
    assert adda.status == "FINISHED"
    # The frozen source network is the baseline's: it labels source test images exactly as well.
    assert adda.metrics["source_acc"] == pytest.approx(base.metrics["source_acc"])


def test_adda_information_maximisation_makes_target_predictions_confident_and_diverse(client) -> None:
    two = [*SMALL, ("epochs", "2"), ("pretrain_epochs", "1"), ("tsne_points", "0"), ("lr_target", "3e-3")]
    plain = quiet(RunRequest("adda", overrides=two))
    im = quiet(RunRequest("adda", overrides=[*two, ("im_weight", "3")]))
    assert im.metrics["validator/im"] > plain.metrics["validator/im"] + 0.1  # what the term optimises
    assert "step/loss/im" in client.get_run(im.run_id).data.metrics
    assert "step/loss/im" not in client.get_run(plain.run_id).data.metrics


def test_adda_config_errors_are_one_line() -> None:
    from runner.errors import Hw3Error

    with pytest.raises(Hw3Error, match="leaves no step of adaptation"):
        quiet(RunRequest("adda", overrides=[*SMALL, ("epochs", "2"), ("pretrain_epochs", "2")]))
    with pytest.raises(Hw3Error, match="source_run=nosuch: no logged model"):
        quiet(RunRequest("adda", overrides=[*SMALL, ("epochs", "1"), ("source_run", "nosuch")]))


def test_a_one_epoch_adda_pretrains_for_half_its_steps_then_adapts(client) -> None:
    Spy.seen.clear()
    with registered(MethodsPlugin(Spy), name="spy"):
        result = quiet(RunRequest("adda-spy", overrides=[*SMALL, ("epochs", "1"), ("tsne_points", "0")]))
    assert result.status == "FINISHED" and Spy.seen["method"].adapting
    assert Spy.seen["method"].pretrain_steps == result.steps // 2
    quick = quiet(RunRequest("adda", preset="quick", overrides=[("test_subset", "200"), ("tsne_points", "0")]))
    assert quick.status == "FINISHED"


def test_seeds_make_child_runs_under_a_parent_with_mean_and_std(client) -> None:
    import io

    from rich.console import Console

    from runner.runs.parent import run_seeds

    req = RunRequest("baseline", overrides=[*SMALL, ("epochs", "1"), ("tsne_points", "0")], run_name="seeded")
    result = run_seeds(req, [0, 1], Console(file=io.StringIO()))
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["hw3.seeds"] == "0,1"
    children = [client.get_run(c.run_id) for c in result.children]
    assert [c.data.tags["mlflow.parentRunId"] for c in children] == [result.parent_run_id] * 2
    assert [c.data.params["seed"] for c in children] == ["0", "1"]
    accs = [c.metrics["target_acc"] for c in result.children]
    assert parent.data.metrics["target_acc/mean"] == pytest.approx(sum(accs) / 2)
    assert parent.data.metrics["target_acc/std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))


def test_report_builds_the_table_from_runs_and_writes_markdown(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from runner.commands.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'report.db'}")
    small = [*SMALL, ("epochs", "1"), ("tsne_points", "100")]
    runs = {
        "source": quiet(RunRequest("baseline", overrides=small)),
        "target": quiet(RunRequest("baseline", overrides=[*small, ("train_on", "target")])),
        "dann": quiet(RunRequest("dann", overrides=small)),
    }
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| method | mnist → mnistm |" in text and "the last epoch" in text
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ")
    }
    assert rows["source only"] == f"{100 * runs['source'].metrics['target_acc']:.2f} (1 run)"
    assert rows["target only"] == f"{100 * runs['target'].metrics['target_acc']:.2f} (1 run)"
    assert rows["DANN"].endswith("(1 run)")
    assert runs["dann"].run_id in text
    assert (tmp_path / "rep" / "mnist-mnistm_dann_tsne_domain.png").exists()
    result = CliRunner().invoke(app, ["report", "--protocol", "oracle", "--out", str(tmp_path / "rep2")])
    assert result.exit_code == 0 and "uses target labels" in (tmp_path / "rep2" / "report.md").read_text()
    assert CliRunner().invoke(app, ["report", "--protocol", "best"]).exit_code == 1


def test_tsne_for_a_finished_run_is_logged_to_it(client) -> None:
    from typer.testing import CliRunner

    from runner.commands.cli import app

    run = quiet(RunRequest("baseline", overrides=[*SMALL, ("epochs", "1"), ("tsne_points", "0")]))
    assert not any(a.path.startswith("figures/tsne") for a in client.list_artifacts(run.run_id, "figures"))
    result = CliRunner().invoke(app, ["tsne", run.run_id, "--points", "200"])
    assert result.exit_code == 0, result.output
    paths = {a.path for a in client.list_artifacts(run.run_id, "figures")}
    assert {"figures/tsne_class.png", "figures/tsne_domain.png"} <= paths


def test_selfens_teacher_follows_the_student_and_is_evaluated(client) -> None:
    result = quiet(RunRequest("selfens", overrides=[*SMALL, ("epochs", "1"), ("tsne_points", "0")]))
    assert result.status == "FINISHED"
    metrics = client.get_run(result.run_id).data.metrics
    assert "step/loss/consistency" in metrics and "train/confident" in metrics
    assert 0.0 <= metrics["train/confident"] <= 1.0
