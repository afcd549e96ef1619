"""The engine: determinism, exact resume after Ctrl-C, the NaN guard, failures marked in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMALL
from helpers import Crashes, InterruptAt, MethodsPlugin, NanAt, Recorder, run_baseline

from runner.errors import RunFailed, RunInterrupted
from runner.runs.execute import RunRequest, execute
from runner.runs.plugins import registered

THREE = [("train_subset", "512"), ("epochs", "3"), ("log_every", "4")]


def quiet_execute(req: RunRequest):
    import io

    from rich.console import Console

    return execute(req, Console(file=io.StringIO()))


def test_same_seed_same_metrics_on_the_cpu() -> None:
    a = run_baseline(*SMALL)
    b = run_baseline(*SMALL)
    assert a.metrics == b.metrics
    c = run_baseline(*SMALL, ("seed", "1"))
    assert c.metrics != a.metrics


def test_lifecycle_hooks_see_the_run(client) -> None:
    recorder = Recorder()
    with registered(recorder, name="recorder"):
        result = run_baseline(*SMALL)
    assert recorder.calls == [("start", result.run_id), ("epoch", 1), ("epoch", 2), ("end", "FINISHED")]


def test_ctrl_c_after_an_epoch_then_resume_matches_an_uninterrupted_run(client) -> None:
    whole = run_baseline(*THREE)
    recorder = Recorder(interrupt_after=1)
    with registered(recorder, name="recorder"), pytest.raises(RunInterrupted, match="after epoch 1"):
        run_baseline(*THREE)
    killed = next(c[1] for c in recorder.calls if c[0] == "start")
    assert recorder.calls[-1] == ("end", "KILLED")
    assert client.get_run(killed).info.status == "KILLED"
    resumed = quiet_execute(RunRequest("baseline", resume=killed))
    assert resumed.run_id == killed and resumed.status == "FINISHED"
    assert resumed.metrics == whole.metrics
    history = client.get_metric_history(killed, "target_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(killed).info.status == "FINISHED"


def test_ctrl_c_mid_epoch_saves_the_step_and_resumes_exactly(client) -> None:
    from plugins.methods.baseline import Baseline

    class Plain(Baseline):  # the same method under another name, for the same experiment
        name = "plain"

    with registered(MethodsPlugin(Plain, InterruptAt), name="test-methods"):
        whole = quiet_execute(RunRequest("plain", overrides=THREE))
        InterruptAt.at_step = 11  # steps per epoch here: 512 // 64 = 8, so this is epoch 2, step 3
        with pytest.raises(RunInterrupted, match="epoch 2, step 3"):
            quiet_execute(RunRequest("interrupt-at", overrides=THREE, run_name="interrupted"))
        run = client.search_runs(
            [client.get_experiment_by_name("hw3-mnist-mnistm").experiment_id],
            filter_string="attributes.run_name = 'interrupted'",
            order_by=["attributes.start_time DESC"],
        )[0]
        assert run.info.status == "KILLED"
        InterruptAt.at_step = -1
        resumed = quiet_execute(RunRequest("interrupt-at", resume=run.info.run_id))
    assert resumed.metrics == whole.metrics


def test_resume_can_extend_epochs_but_not_change_the_config(client) -> None:
    first = run_baseline(*SMALL)
    with pytest.raises(Exception, match="already finished its 2 epochs; pass --epochs N"):
        quiet_execute(RunRequest("baseline", resume=first.run_id))
    with pytest.raises(Exception, match="lr cannot change"):
        quiet_execute(RunRequest("baseline", resume=first.run_id, overrides=[("lr", "0.1")]))
    longer = quiet_execute(RunRequest("baseline", resume=first.run_id, overrides=[("epochs", "3")]))
    assert [m.step for m in client.get_metric_history(first.run_id, "target_acc")] == [1, 2, 3]
    assert longer.status == "FINISHED"


def test_nan_loss_stops_the_run_as_failed_and_keeps_the_checkpoint(client) -> None:
    NanAt.nan_step = 12  # epoch 2 (8 steps per epoch), after epoch 1's checkpoint
    with registered(MethodsPlugin(NanAt), name="nan"), pytest.raises(RunFailed) as info:
        quiet_execute(RunRequest("nan-at", overrides=SMALL, run_name="nan-run"))
    message = str(info.value)
    assert "'loss' became nan at epoch 2, step 4" in message and "Lower the learning rate" in message
    run = client.search_runs(
        [client.get_experiment_by_name("hw3-mnist-mnistm").experiment_id],
        filter_string="attributes.run_name = 'nan-run'",
    )[0]
    assert run.info.status == "FAILED"
    import torch

    ckpt = torch.load(Path(run.data.tags["hw3.checkpoint"]), weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] == 0  # the last good state, not the NaN one


def test_a_method_that_raises_is_failed_with_its_traceback_saved(client) -> None:
    with registered(MethodsPlugin(Crashes), name="crashing-plugin"), pytest.raises(RunFailed) as info:
        quiet_execute(RunRequest("crashes", overrides=SMALL))
    message = str(info.value)
    assert "method 'crashes' (plugin 'crashing-plugin', in-process) raised ValueError: shapes do not match" in message
    run_id = str(info.value).rsplit("run ", 1)[1]
    assert client.get_run(run_id).info.status == "FAILED"
    text = Path(client.download_artifacts(run_id, "error.txt")).read_text()
    assert "Traceback" in text and "shapes do not match" in text


def test_compile_setting_compiles_each_network_and_the_logged_model_still_loads(client, monkeypatch) -> None:
    import mlflow
    import torch

    compiled: list[str] = []
    original = torch.nn.Module.compile

    def eager(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        compiled.append(type(self).__name__)
        original(self, backend="eager")  # dynamo's tracing without inductor's slow C++ build

    monkeypatch.setattr(torch.nn.Module, "compile", eager)
    result = run_baseline(*SMALL, ("compile", "true"), ("tsne_points", "0"))
    assert result.status == "FINISHED" and compiled == ["DigitClassifier"]
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")
    assert model(torch.rand(3, 3, 28, 28)).shape == (3, 10)
