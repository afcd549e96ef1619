"""`hw3 data` and runs on the formats users bring, through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from runner.commands.cli import app
from runner.runs.plugins import reset_manager

runner = CliRunner()


@pytest.fixture
def small_syndigits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user registry that keeps syndigits small, as a quick test wants."""
    user = tmp_path / "registry.toml"
    user.write_text("[datasets.syndigits]\nn_train = 1000\nn_test = 300\n")
    monkeypatch.setenv("HW3_REGISTRY", str(user))
    reset_manager()
    return user


@pytest.fixture
def course_svhn(tmp_path: Path) -> Path:
    """A course-format digits/ folder: 300 training and 100 test 32x32 PNGs of printed digits."""
    from plugins.datasets.syndigits import render

    root = tmp_path / "hw3_data" / "digits"
    for split, n, seed in (("train", 300, 1), ("test", 100, 2)):
        images, labels = render(n, seed)
        (root / "svhn" / split).mkdir(parents=True)
        lines = ["image_name,label"]
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / "svhn" / split / f"{i:05d}.png")
            lines.append(f"{i:05d}.png,{int(label)}")
        (root / "svhn" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_data_list_names_every_builtin_dataset() -> None:
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name in ("mnist", "mnistm", "svhn", "usps", "syndigits", "faces"):
        assert name in result.stdout


def test_data_check_reports_counts_and_every_problem(course_svhn: Path) -> None:
    result = runner.invoke(app, ["data", "check", "svhn", "--data-root", str(course_svhn)])
    assert result.exit_code == 0, result.output
    assert "course folder" in result.stdout and "no problems found" in result.stdout
    # 300 training images: a stratified 10% is held out for validation
    assert "270" in result.stdout and "val (10% of train, held out)" in result.stdout and "3, 1: 3" in result.stdout
    (course_svhn / "svhn" / "train" / "00007.png").write_bytes(b"junk")
    with open(course_svhn / "svhn" / "test.csv", "a") as fh:
        fh.write("00001.png,11\n")
    result = runner.invoke(app, ["data", "check", "svhn", "--data-root", str(course_svhn)])
    assert result.exit_code == 1
    assert "00007.png: not a readable image" in result.stderr
    assert "label 11 is outside the classes" in result.stderr
    assert "2 problem(s) in dataset 'svhn'" in result.stderr


def test_data_prepare_then_show(course_svhn: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "prepare", "svhn", "--data-root", str(course_svhn)])
    assert result.exit_code == 0, result.output
    assert "train 300, test 100 images cached in" in result.stdout
    out = tmp_path / "svhn.png"
    result = runner.invoke(
        app, ["data", "show", "svhn", "--data-root", str(course_svhn), "--out", str(out), "--per-class", "6"]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        width, height = im.size
    assert height > width > 0  # ten rows of six, enlarged
    assert abs(height / width - (10 * 34 + 2) / (6 * 34 + 2)) < 0.05


def test_data_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "prepare", "svhn", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "no svhn data under" in result.stderr
    result = runner.invoke(app, ["data", "prepare", "syndigits", "--download"])
    assert result.exit_code == 1 and "has no download" in result.stderr


def test_run_on_a_course_format_folder_with_no_other_step(course_svhn: Path, client) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            "baseline",
            "--pair",
            "svhn:mnistm",
            "--data-root",
            str(course_svhn),
            "--epochs",
            "10",
            "--set",
            "batch_size=32",
            "--set",
            "arch=mnist",  # the paper's small network: quick on 300 images
            "--set",
            "augment=false",  # 300 images, 10 epochs: too few to learn through augmentation
        ],
    )
    assert result.exit_code == 0, result.output
    run_id = result.stdout.split("run ")[-1].split()[0]
    run = client.get_run(run_id)
    assert run.data.params["pair"] == "svhn:mnistm" and run.data.params["image_size"] == "32"
    assert run.data.metrics["source_acc"] > 0.25  # 300 printed digits: learning, well above chance (0.1)


def test_run_offline_on_syndigits(small_syndigits: Path, client) -> None:
    args = [
        "run",
        "baseline",
        "--pair",
        "syndigits:mnistm",
        "--epochs",
        "4",
        "--set",
        "arch=mnist",
        "--set",
        "batch_size=32",
        "--set",
        "augment=false",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = client.get_run(result.stdout.split("run ")[-1].split()[0])
    assert run.data.params["image_size"] == "32" and run.info.status == "FINISHED"
    assert run.data.metrics["source_acc"] > 0.5


def test_show_syndigits_grid(small_syndigits: Path, tmp_path: Path) -> None:
    out = tmp_path / "syn.png"
    result = runner.invoke(app, ["data", "show", "syndigits", "--out", str(out)])
    assert result.exit_code == 0, result.output
    arr = np.asarray(Image.open(out))
    assert arr.ndim == 3 and arr.std() > 20
