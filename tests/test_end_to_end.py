"""`hw3 run baseline` end to end on real embedded data, read back through MLflow's client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers import patient
from typer.testing import CliRunner

from runner.commands.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_cli_run_lands_in_mlflow_with_params_curves_figures_and_model(client) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "baseline",
            "--epochs",
            "2",
            "--set",
            "train_subset=1000",
            "--set",
            "train_on=target",
            "--seed",
            "3",
            "--set",
            "log_every=4",
            "--set",
            "augment=false",  # two epochs: learning is quicker without it
        ],
    )
    assert result.exit_code == 0, result.output
    assert "target acc" in result.stdout and "mlflow ui" in result.stdout
    run_id = result.stdout.split("run ")[-1].split()[0]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "hw3-mnist-mnistm"
    assert run.data.params["train_on"] == "target" and run.data.params["seed"] == "3"
    assert run.data.params["pair"] == "mnist:mnistm" and run.data.params["train_subset"] == "1000"
    assert run.data.tags["method"] == "baseline" and run.data.tags["pair"] == "mnist:mnistm"
    assert run.data.tags["seed"] == "3" and "torch.version" in run.data.tags
    acc = client.get_metric_history(run_id, "target_acc")
    assert [m.step for m in acc] == [1, 2]
    assert acc[-1].value > 0.6  # target labels, 2 epochs on 1,000 images: well above chance (0.1)
    assert len(client.get_metric_history(run_id, "step/loss")) >= 5
    assert not any("class_acc" in key for key in run.data.metrics)  # per class: one table, not 20 series
    table = json.loads(Path(client.download_artifacts(run_id, "tables/per_class_acc.json")).read_text())
    assert table["columns"] == ["epoch", "domain", "class", "accuracy"] and [2, "target", "7"] in [
        row[:3] for row in table["data"]
    ]
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert figures == {
        "figures/curves.png",
        "figures/confusion_target.png",
        "figures/confusion_source.png",
        "figures/validators.png",
        "figures/tsne_class.png",
        "figures/tsne_domain.png",
    }
    png = Path(client.download_artifacts(run_id, "figures/confusion_target.png")).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    config = client.download_artifacts(run_id, "config.json")
    assert '"train_on": "target"' in Path(config).read_text()

    # The logged model loads back and classifies target test images as well as the run said.
    from runner.data import data_context, load_dataset
    from runner.runs.plugins import get_manager

    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    test = load_dataset(get_manager().dataset("mnistm"), data_context())["test"]
    with torch.no_grad():
        pred = model(test.images.float() / 255).argmax(1)
    measured = (pred == test.labels).float().mean().item()
    assert abs(measured - acc[-1].value) < 0.01


def test_sigterm_saves_a_checkpoint_and_marks_the_run_killed(tmp_path: Path, client) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from runner.commands.cli import main; main()",
            "run",
            "baseline",
            "--epochs",
            "50",
            "--set",
            "train_subset=640",
            "--run-name",
            "to-be-killed",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + patient(120)
    for line in proc.stdout:  # wait for the end of the first epoch (not a step line), then stop it
        if re.match(r"^epoch 1/50  (?!step )", line) or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=patient(120))
    assert proc.returncode == 130, err
    assert "KILLED" in err and "--resume" in err and "Traceback" not in err
    exp = client.get_experiment_by_name("hw3-mnist-mnistm")
    run = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'to-be-killed'")[0]
    assert run.info.status == "KILLED"
    ckpt = torch.load(run.data.tags["hw3.checkpoint"], weights_only=False)
    assert 1 <= ckpt["epoch"] < 50


def test_embedded_pair_is_real_mnist_and_its_mnistm() -> None:
    from runner.data import data_context, load_dataset
    from runner.runs.plugins import get_manager

    manager, ctx = get_manager(), data_context()
    mnist = load_dataset(manager.dataset("mnist"), ctx)
    mnistm = load_dataset(manager.dataset("mnistm"), ctx)
    assert mnist["train"].images.shape == (4000, 1, 28, 28) and mnist["test"].images.shape == (1000, 1, 28, 28)
    assert torch.bincount(mnist["test"].labels).tolist() == [100] * 10
    assert mnistm["train"].images.shape == (4000, 3, 28, 28)
    assert torch.equal(mnistm["train"].labels, mnist["train"].labels)
    # The recipe: where the digit is, the photo is inverted; elsewhere the photo shows through.
    digit = mnist["train"].images[:, 0] > 0
    colour = mnistm["train"].images.float()
    assert colour[:, :, :, :].std() > 40  # coloured photo texture, not flat digits
    assert not torch.equal(colour[:, 0], colour[:, 1])  # truly three channels
    assert digit.float().mean() > 0.1
    # Train and test digits are disjoint and the split is the same on every call.
    train_rows = {bytes(x.numpy()) for x in mnist["train"].images}
    assert not any(bytes(x.numpy()) in train_rows for x in mnist["test"].images)


def test_dataset_cache_is_reused_and_rebuilt_when_the_fingerprint_changes(tmp_path: Path) -> None:
    from runner.data import DataContext, DatasetSpec, Split, load_dataset

    builds = []

    def build(ctx: DataContext) -> dict[str, Split]:
        builds.append(1)
        x = torch.full((4, 1, 8, 8), len(builds), dtype=torch.uint8)
        return {"train": Split(x, torch.zeros(4, dtype=torch.long)), "test": Split(x, torch.zeros(4, dtype=torch.long))}

    version = ["a"]
    spec = DatasetSpec("toy", "", 1, 8, ("0",), build=build, fingerprint=lambda ctx: version[0])
    ctx = DataContext(root=tmp_path, cache_dir=tmp_path / "cache")
    import runner.cache as cache

    load_dataset(spec, ctx)
    cache._memo.clear()
    assert load_dataset(spec, ctx)["train"].images[0, 0, 0, 0] == 1 and len(builds) == 1  # from the cache file
    version[0] = "b"
    assert load_dataset(spec, ctx)["train"].images[0, 0, 0, 0] == 2 and len(builds) == 2
    assert not list((tmp_path / "cache").glob(".*tmp*"))  # nothing half-written left behind


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree to build a wheel")
def test_wheel_carries_the_registry_and_the_builtin_entry_points(tmp_path: Path) -> None:
    """A non-editable install (pip install .) must find registry.toml and the built-ins."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("hw3-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "runner/registry.toml" in names and "plugins/methods/baseline.py" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    probe = (
        "import runner, runner.config as c; from runner.runs.plugins import get_manager; "
        "print(runner.__file__); print(c.registry_path()); print(sorted(get_manager().methods()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1] == str(target / "runner" / "registry.toml")
    assert "baseline" in lines[2]
    listing = subprocess.run(
        [sys.executable, "-c", "from runner.commands.cli import main; main()", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=120,
    )
    assert listing.returncode == 0 and "mnist:mnistm" in listing.stdout, listing.stderr
    assert np is not None


def test_concurrent_runs_on_a_new_sqlite_store_all_land(tmp_path: Path) -> None:
    """Three `hw3 run` processes creating one MLflow SQLite store at once: every run lands."""
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [
        sys.executable,
        "-c",
        "from runner.commands.cli import main; main()",
        "run",
        "baseline",
        "--epochs",
        "1",
        "--set",
        "train_subset=256",
        "--set",
        "test_subset=200",
        "--set",
        "tsne_points=0",
        "--set",
        "threads=1",  # three processes on a small machine: no oversubscription
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "--seed", str(seed)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(3)
    ]
    outputs = [p.communicate(timeout=patient(300)) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outputs]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("hw3-mnist-mnistm").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
