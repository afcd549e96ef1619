"""Bad input, untrusted files and broken plugins: one clear line and a non-zero exit, checked before
any work, or the behaviour a user expects; nothing in a checkpoint or a tag ever runs as code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from helpers import MethodsPlugin, run_baseline
from typer.testing import CliRunner

from runner import DatasetSpec, Split, hookimpl
from runner.commands.cli import app
from runner.errors import Hw3Error
from runner.runs.execute import RunRequest, execute
from runner.runs.plugins import registered

TINY = [("epochs", "1"), ("train_subset", "256"), ("test_subset", "200"), ("tsne_points", "0")]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, *expected: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for text in expected:
        assert text in lines[0], lines[0]


class Marker:
    """Unpickling this creates a file: proof that loading it ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "seed=-1"], "seed=-1: must be at least 0 and at most 4,294,967,295"),
        (["--set", "image_size=-1"], "image_size=-1: must be at least 0"),
        (["--set", "train_subset=-5"], "train_subset=-5: must be at least 0"),
        (["--set", "test_subset=-3"], "test_subset=-3: must be at least 0"),
        (["--set", "lr=nan"], "lr=nan: must be a finite number"),
        (["--set", "lr=inf"], "lr=inf: must be a finite number"),
        (["--set", "lr=0"], "lr=0.0: must be greater than 0"),
        (["--set", "val_fraction=1"], "val_fraction=1.0: must be at least 0 and less than 1"),
        (["--pair", "mnist:nosuch", "--pair", "mnist:mnistm"], "--pair is given 2 times"),
        (["--seeds", "0,0"], "a seed is listed twice"),
        (["--set", "batch_size=100000"], "batch_size=100000 is more than the 3600 training images of mnist"),
        (["--set", "checkpoint_dir=/proc/hw3-cannot-be-here"], "checkpoint_dir=/proc/hw3-cannot-be-here: cannot write"),
    ],
)
def test_bad_values_are_one_line_and_start_no_run(client, args: list[str], expected: str) -> None:
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    one_line_error(invoke("run", "baseline", *args), expected)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before


def test_a_checkpoint_path_that_is_a_file_or_a_cache_that_is_a_file_is_named(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    one_line_error(invoke("run", "baseline", "--set", f"checkpoint_dir={tmp_path / 'afile'}"), "that is a file")
    monkeypatch.setenv("HW3_CACHE_DIR", str(tmp_path / "afile"))
    one_line_error(invoke("run", "baseline"), "HW3_CACHE_DIR=", "that is a file, not a folder")


def test_other_commands_refuse_bad_numbers_and_paths(tmp_path: Path) -> None:
    one_line_error(invoke("tsne", "someid", "--points", "-5"), "--points -5: must be at least 10")
    one_line_error(invoke("data", "show", "mnist", "--per-class", "0"), "--per-class 0: must be at least 1")
    one_line_error(invoke("data", "show", "mnist", "--out", str(tmp_path / "no" / "x.png")), "does not exist")
    assert not (tmp_path / "no").exists()
    one_line_error(invoke("sweep", "baseline", "--grid", "lr=0.1", "--workers", "0"), "--workers 0: must be at least 1")


def test_an_unknown_tracking_scheme_says_which_work(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://somewhere")
    one_line_error(invoke("run", "baseline"), "'foo' is not a tracking store; use sqlite:///")


def test_an_unwritable_store_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/hw3-no/mlflow.db")
    one_line_error(invoke("run", "baseline"), "cannot open the MLflow store sqlite:////proc/hw3-no/mlflow.db")


def test_a_registry_that_does_not_parse_is_said_once(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text("[datasets\n")
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "from runner.commands.cli import main; main()", "run", "baseline"],
        capture_output=True,
        text=True,
        env={**os.environ, "HW3_REGISTRY": str(bad)},
        timeout=300,
    )
    assert out.returncode == 1 and out.stderr.count("not valid TOML") == 1, out.stderr


def test_a_crafted_checkpoint_never_runs_code_and_a_damaged_one_is_one_line(client, tmp_path: Path) -> None:
    result = run_baseline(*TINY, ("checkpoint_dir", str(tmp_path / "ckpt")))
    marker = tmp_path / "ran-code"
    ckpt = Path(result.checkpoint)
    ckpt.write_bytes(pickle.dumps({"method": Marker(marker)}))
    args = ["run", "baseline", "--resume", result.run_id, "--epochs", "2"]
    one_line_error(invoke(*args), str(ckpt), "instead of resuming")
    assert not marker.exists()
    ckpt.write_bytes(b"\x80\x04 truncated")
    one_line_error(invoke(*args), str(ckpt), "damaged")


def test_resume_reads_the_checkpoint_from_its_folder_never_from_the_editable_tag(client, tmp_path: Path) -> None:
    result = run_baseline(*TINY, ("checkpoint_dir", str(tmp_path / "ckpt")))
    marker, crafted = tmp_path / "ran-code", tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps(Marker(marker)))
    client.set_tag(result.run_id, "hw3.checkpoint", str(crafted))  # anyone who can write the store can
    resumed = execute(RunRequest("baseline", resume=result.run_id, overrides=[("epochs", "2")]))
    assert resumed.status == "FINISHED" and not marker.exists()


def test_a_pickled_model_is_loaded_only_when_the_store_is_trusted(client, tmp_path: Path, monkeypatch) -> None:
    result = run_baseline(*TINY)
    paths = {a.path for a in client.list_artifacts(result.run_id, "weights")}
    assert paths == {"weights/spec.json", "weights/state.pt"}  # what hw3's own commands load
    from runner.store import reader

    tracker = reader()
    monkeypatch.setattr(tracker.client, "download_artifacts", _no_weights(tracker.client.download_artifacts))
    with pytest.raises(Hw3Error, match="logged only a pickled model .* HW3_TRUST_PICKLES=1"):
        tracker.load_model(result.run_id, lambda spec: None)
    monkeypatch.setenv("HW3_TRUST_PICKLES", "1")
    assert tracker.load_model(result.run_id, lambda spec: None)(torch.rand(2, 3, 28, 28)).shape == (2, 10)


def _no_weights(download):
    def without(run_id, path, *args, **kwargs):
        if path.startswith("weights/"):
            raise OSError("not there")
        return download(run_id, path, *args, **kwargs)

    return without


def test_commands_on_an_interrupted_run_say_it_has_no_model_yet(client) -> None:
    from helpers import Recorder

    from runner.errors import RunInterrupted

    recorder = Recorder(interrupt_after=1)
    with registered(recorder, name="recorder"), pytest.raises(RunInterrupted):
        run_baseline(*[kv for kv in TINY if kv[0] != "epochs"], ("epochs", "2"))
    run_id = recorder.calls[0][1]
    one_line_error(invoke("tsne", run_id), f"run {run_id} is KILLED", f"hw3 run baseline --resume {run_id}")
    one_line_error(invoke("sample", run_id), "is KILLED")


class Declares:
    """A dataset plugin whose loader returns what its spec does not say."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    @hookimpl
    def hw3_register_datasets(self, register):
        def build(ctx):
            return {"train": Split(self.images, self.labels), "test": Split(self.images, self.labels)}

        register(
            DatasetSpec("liar", "", 1, 28, tuple("0123456789"), build=build, fingerprint=lambda c: os.urandom(8).hex())
        )


@pytest.mark.parametrize(
    ("images", "labels", "expected"),
    [
        (
            torch.zeros(64, 1, 7, 7, dtype=torch.uint8),
            torch.zeros(64).long(),
            "has 1 channel(s) of 7x7, but the dataset declares 1 channel(s) of 28x28",
        ),
        (torch.zeros(64, 1, 28, 28), torch.zeros(64).long(), "got float32"),
        (torch.zeros(64, 28, 28, dtype=torch.uint8), torch.zeros(64).long(), "got shape (64, 28, 28)"),
        (
            torch.zeros(64, 1, 28, 28, dtype=torch.uint8),
            torch.zeros(64),
            "must have int64 labels shaped (N,), got float32",
        ),
    ],
)
def test_a_dataset_must_be_what_it_declares_and_errors_name_its_plugin(images, labels, expected: str) -> None:
    with registered(Declares(images, labels), name="liar-plugin"):
        one_line_error(
            invoke("run", "baseline", "--pair", "liar:mnistm", "--set", "batch_size=8"), expected, "liar-plugin"
        )
        check = invoke("data", "check", "liar")
        assert check.exit_code == 1 and expected in check.stderr


def test_an_unknown_name_says_which_plugins_were_left_out(monkeypatch) -> None:
    from runner.runs.plugins import PluginManager

    manager = PluginManager()
    manager.skipped = ["holdot (hw3-holdot)"]
    manager.unmatched = ["mcc-typo"]
    monkeypatch.setenv("HW3_LOAD_PLUGINS", "mcc-typo")
    with pytest.raises(Hw3Error, match=r"unknown method 'mcc'.*HW3_LOAD_PLUGINS='mcc-typo' left out holdot"):
        manager.method("mcc")
    assert "HW3_LOAD_PLUGINS names 'mcc-typo', which is no installed plugin or package" in manager.problems()


def test_a_method_declares_its_own_run_defaults_shown_with_their_origin() -> None:
    from plugins.methods.baseline import Baseline

    class Patient(Baseline):
        name = "patient"
        run_defaults = {"epochs": 7, "batch_size": 16}

    class Broken(Baseline):
        name = "broken-defaults"
        run_defaults = {"epoch": 7}

    with registered(MethodsPlugin(Patient, Broken), name="patient-plugin") as info:
        shown = invoke("show", "patient")
        assert shown.exit_code == 0, shown.output
        row = next(line for line in shown.stdout.splitlines() if line.strip("│ ").startswith("epochs"))
        assert "7" in row and "method patient's defaults" in row
        assert any("run_defaults has ['epoch']" in e for e in info.errors)


def test_a_run_killed_without_a_word_is_marked_killed_by_the_next_command(client) -> None:
    from runner.record import PROCESS as PROCESS_TAG
    from runner.store import reap_orphans

    result = run_baseline(*TINY)
    client.set_terminated(result.run_id, status="RUNNING")
    tag = client.get_run(result.run_id).data.tags[PROCESS_TAG]
    pid, rest = tag.split("@", 1)
    client.set_tag(result.run_id, PROCESS_TAG, f"999999999@{rest}")  # a process that is gone
    assert result.run_id in reap_orphans()
    assert client.get_run(result.run_id).info.status == "KILLED"
    assert result.run_id not in reap_orphans()  # said once


def test_resuming_a_run_that_another_process_trains_is_refused(client, tmp_path: Path) -> None:
    from runner.checkpoint import RunLock

    result = run_baseline(*TINY)
    with RunLock(Path(result.checkpoint).parent):  # as the process training it holds it
        one_line_error(
            invoke("run", "baseline", "--resume", result.run_id, "--epochs", "2"),
            f"run {result.run_id} is still training",
        )
    resumed = execute(RunRequest("baseline", resume=result.run_id, overrides=[("epochs", "2")]))
    assert resumed.status == "FINISHED"


def test_report_never_averages_runs_of_different_settings(client, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'r.db'}")
    a = run_baseline(*TINY)
    b = run_baseline(*TINY, ("seed", "1"))
    c = run_baseline(*TINY, ("lr", "0.01"))
    result = invoke("report", "--out", str(tmp_path / "rep"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| source only [lr=0.001] |" in text and "| source only [lr=0.01] |" in text
    assert "(2 runs)" in text and "(1 run)" in text and c.run_id in text and a.run_id in text and b.run_id in text
    chosen = invoke("report", "--filter", "lr=0.01", "--out", str(tmp_path / "rep2"))
    assert chosen.exit_code == 0 and "| source only | " in (tmp_path / "rep2" / "report.md").read_text()


def test_experiments_open_as_training_runs_in_the_ui(client) -> None:
    result = run_baseline(*TINY)
    experiment = client.get_experiment_by_name(result.experiment)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
