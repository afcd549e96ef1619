"""The MLflow run record: one owner opens and ends every run, the schema reads back what it
wrote, and what the store holds is what a person should see in the UI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_baseline
from rich.console import Console

from runner import record
from runner.config import Task
from runner.errors import Hw3Error
from runner.method import ReportRow
from runner.runs.execute import execute
from runner.runs.plan import RunRequest

TINY = [("epochs", 1), ("train_subset", 256), ("test_subset", 100), ("tsne_points", 0)]


def quiet(req: RunRequest):  # type: ignore[no-untyped-def]
    return execute(req, Console(file=io.StringIO()))


def all_runs(client) -> dict:  # type: ignore[type-arg]
    return {r.info.run_id: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}


def test_an_exception_between_opening_the_run_and_its_first_epoch_leaves_it_failed(client, monkeypatch) -> None:
    import runner.checkpoint

    def refuse(self):  # type: ignore[no-untyped-def]
        raise OSError("no space left on device")

    # The lock beside a new run's checkpoint is taken after the run is opened, before setup.
    monkeypatch.setattr(runner.checkpoint.RunLock, "__enter__", refuse)
    before = all_runs(client)
    with pytest.raises(OSError, match="no space left"):
        run_baseline(*TINY)
    (run,) = [r for run_id, r in all_runs(client).items() if run_id not in before]
    assert run.info.status == "FAILED"
    assert run.data.tags[record.ERROR] == "no space left on device"


def test_a_record_reads_back_what_it_wrote() -> None:
    rec = record.RunRecord(
        method="dann",
        task=Task.pair_of("mnist", "mnistm"),
        seed=2,
        row=ReportRow("DANN", 1, 10),
        parent_run_id="p1",
        sweep_setting={"lr": "0.01"},
        suite=record.SuiteItem("report", "dann-mnist", "abc"),
        processes=2,
        checkpoint="/c/r1/last.pt",
        device="cpu (2 threads)",
        process="1@h:2",
        settings={"epochs": "3"},
    )
    run = SimpleNamespace(
        data=SimpleNamespace(tags=rec.tags(), params={record.CHECKPOINT_DIR: "/c"}),
        info=SimpleNamespace(run_id="r1"),
    )
    back = record.RunRecord.from_run(run)
    assert back == record.RunRecord(**{**vars(rec), "checkpoint_dir": "/c"})
    # A run from before the checkpoint-folder param: its tag, when shaped as hw3 wrote it.
    run.data.params = {}
    assert record.RunRecord.from_run(run).checkpoint_dir == "/c"
    # Tags are editable in the UI: nonsense in them reads as the defaults, never a traceback.
    edited = {record.ROW_PLACE: "first", record.PROCESSES: "", record.SEED: "x", record.PAIR: "mnist"}
    run.data.tags = {**rec.tags(), **edited}
    odd = record.RunRecord.from_run(run)
    assert (odd.row, odd.processes, odd.seed, odd.task.pair) == (ReportRow("DANN", 1, 10), 1, None, "mnist:")


def test_the_selection_reads_back_from_its_tags_and_from_metrics_of_older_runs() -> None:
    picked = {"selected/last/epoch": 3.0, "selected/last/target_acc": 0.633, "selected/im/epoch": 2.0}
    picked |= {"selected/im/score": 1.4539791, "selected/im/target_acc": 0.592}
    tags = record.selection_tags(picked)
    assert tags == {
        "hw3.selected/last": "epoch=3 target_acc=0.633",
        "hw3.selected/im": "epoch=2 score=1.4539791 target_acc=0.592",
    }
    run = SimpleNamespace(data=SimpleNamespace(tags=tags, metrics={"target_acc": 0.633}))
    assert record.selection(run) == picked
    table = record.selection_table(picked)
    assert table["columns"] == ["protocol", "epoch", "score", "target_acc"]
    assert table["data"] == [["last", 3.0, None, 0.633], ["im", 2.0, 1.4539791, 0.592]]
    # A run logged before the selection became tags has it as metrics: hw3 report still reads it.
    older = SimpleNamespace(data=SimpleNamespace(tags={}, metrics={**picked, "target_acc": 0.633}))
    assert record.selection(older) == picked
    assert record.split_selection({**picked, "proxy_a_distance": 1.9}) == (picked, {"proxy_a_distance": 1.9})


def test_the_store_holds_what_a_person_should_see(client) -> None:
    first = quiet(RunRequest("baseline", overrides=[*TINY, ("lr", 0.003)]))
    resumed = quiet(RunRequest("baseline", resume=first.run_id, overrides=[("epochs", 2)]))
    assert resumed.status == "FINISHED"
    run = client.get_run(first.run_id)
    tags, params = run.data.tags, run.data.params
    # Its headline as the run page's description.
    assert tags[record.MLFLOW_NOTE].startswith("baseline on mnist:mnistm: target_acc ")
    assert tags[record.MLFLOW_NOTE].split(" after ")[1].startswith("2 epochs (target_val_acc ")
    # Who and what made it, as the UI's "Created by" and "Source" read them.
    assert tags[record.MLFLOW_USER] and tags[record.MLFLOW_SOURCE_NAME]
    # A name that tells it from other baseline runs: the setting given, and the seed.
    assert run.info.run_name == "baseline-mnist-mnistm-train_subset=256-test_subset=100-lr=0.003-seed0"
    # Params are write-once: what a resume may change is a tag, and it says what the run now is.
    assert "epochs" not in params and tags[record.setting_tag("epochs")] == "2"
    assert params["lr"] == "0.003" and params[record.CHECKPOINT_DIR]
    # Numbers as a person reads them: no float32 noise.
    for key, value in run.data.metrics.items():
        assert value == float(f"{value:.7g}"), key
    # Each segment's model at its own step, the later one linked to the summary metrics.
    import mlflow

    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    models = [m for m in models if m.source_run_id == first.run_id]
    assert sorted(m.tags.get("epochs") for m in models) == ["1", "2"]
    newest = max(models, key=lambda m: int(m.tags["epochs"]))
    assert "target_acc" in {m.key for m in newest.metrics or []}
    # The selection is tags and a table: the run page's metric charts are its curves.
    assert record.selection(run)["selected/last/target_acc"] == run.data.metrics["target_acc"]
    assert not any(k.startswith("selected/") for k in run.data.metrics)
    # The experiment opens in the training view, its runs table showing the headline metrics.
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags[record.EXPERIMENT_KIND] == record.TRAINING_KIND
    view = json.loads(exp.tags[record.SHARED_VIEW + "hw3"])
    assert view["selectedColumns"][2:] == ["metrics.`target_acc`", "metrics.`target_val_acc`", "metrics.`source_acc`"]
    assert resumed.link.endswith(
        f"/#/experiments/{run.info.experiment_id}/runs?viewStateShareKey=hw3&workflowType=machine_learning"
    )
    # The per-class table is an MLflow table (the UI shows it as one), each epoch's rows once.
    assert {"path": "tables/per_class_acc.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
    table = json.loads(Path(client.download_artifacts(first.run_id, "tables/per_class_acc.json")).read_text())
    assert sorted({row[0] for row in table["data"]}) == [1, 2] and len(table["data"]) == 2 * 2 * 10


def test_a_tracker_read_of_an_unknown_run_is_one_line(client) -> None:
    from runner.store import reader

    with pytest.raises(Hw3Error, match="run nope: no such run"):
        reader().record("nope")
