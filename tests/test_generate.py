"""GAN and ACGAN: the networks, the quality metrics, runs end to end, resume, faces and `hw3 sample`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from runner.commands.cli import app
from runner.generate import Discriminator, Generator, frechet_distance, kernel_distance, layout
from runner.runs.execute import RunRequest, execute

# Small but real: 512 digits, 2 epochs, metrics on 500 samples.
TINY = [("train_subset", "512"), ("test_subset", "500"), ("epochs", "2"), ("quality_samples", "500"), ("grid", "16")]


def quiet(req: RunRequest):
    return execute(req, Console(file=io.StringIO()))


@pytest.mark.parametrize(("size", "expected"), [(64, (4, 4)), (32, (4, 3)), (28, (7, 2))])
def test_dcgan_layout_keeps_the_tutorial_at_64_and_scales_down(size: int, expected: tuple[int, int]) -> None:
    assert layout(size) == expected
    g, d = Generator(size, 3, n_classes=2), Discriminator(size, 3, n_classes=2)
    x = g(torch.randn(5, 100), torch.tensor([0, 1, 0, 1, 1]))
    assert x.shape == (5, 3, size, size) and x.min() >= -1 and x.max() <= 1
    adv, aux = d(x)
    assert adv.shape == (5,) and aux.shape == (5, 2)


def test_the_64px_networks_are_the_tutorials() -> None:
    g, d = Generator(64, 3), Discriminator(64, 3)
    # The tutorial's parameter counts (its D ends in a 4x4 conv to one logit, as here).
    assert sum(p.numel() for p in g.parameters()) == 3_576_704
    assert sum(p.numel() for p in d.parameters()) == 2_765_568
    assert d(torch.randn(2, 3, 64, 64))[1] is None


def test_layout_rejects_sizes_the_design_cannot_reach() -> None:
    with pytest.raises(ValueError, match="28, 32, 64"):
        layout(30)


def test_frechet_distance_and_kid_are_zero_for_one_distribution_and_grow_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3000, 8)), rng.normal(size=(3000, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, b) < 0.1
    shifted = b + 2.0
    assert frechet_distance(a, shifted) == pytest.approx(8 * 4.0, rel=0.05)  # ||mu_a - mu_b||^2
    assert abs(kernel_distance(a, b, subsets=10, size=500)) < 0.05
    assert kernel_distance(a, shifted, subsets=10, size=500) > 1.0


def test_gan_run_logs_grids_curves_quality_and_a_generator_that_samples(client, tmp_path: Path) -> None:
    result = quiet(RunRequest("gan", overrides=TINY))
    assert result.status == "FINISHED"
    m = result.metrics
    assert 0.9 < m["quality/classifier_acc"] <= 1.0  # the independent feature network is a good classifier
    assert m["quality/n_fake"] == 500 and m["quality/n_real"] == 500
    assert m["quality/fd"] > 0 and "quality/label_acc" not in m
    run_id = result.run_id
    figures = {f.path for f in client.list_artifacts(run_id, "figures")}
    assert {"figures/samples.png", "figures/losses.png", "figures/curves.png"} <= figures
    series = [f.path for f in client.list_artifacts(run_id, "images")]
    assert sum("samples+step+1+" in p for p in series) >= 1 and sum("samples+step+2+" in p for p in series) >= 1
    assert [h.step for h in client.get_metric_history(run_id, "fd_1k")] == [1, 2]

    out = tmp_path / "grid.png"
    r = CliRunner().invoke(app, ["sample", run_id, "--n", "12", "--out", str(out)])
    assert r.exit_code == 0, r.output
    w, h = Image.open(out).size
    assert (w, h) == (4 * 30 + 2, 3 * 30 + 2)  # 4 columns of 28 px images with 2 px gaps
    r = CliRunner().invoke(app, ["sample", run_id, "--label", "3", "--out", str(out)])
    assert r.exit_code == 1 and "unconditional" in r.output and "Traceback" not in r.output


def test_quality_metrics_put_real_images_far_closer_than_an_untrained_generator() -> None:
    """The feature space must tell data from noise; whether training gets close is bench/gan.py's job."""
    from plugins.methods.gan import Gan
    from runner.data import to_network_range
    from runner.generate import features
    from runner.runs.plan import make_plan
    from runner.runs.plugins import get_manager
    from runner.runs.prepare import load_domains, make_context

    manager = get_manager()
    resolved = make_plan(RunRequest("gan", overrides=TINY), manager).resolved
    ctx = make_context(resolved, load_domains(resolved, manager, None, torch.device("cpu")))
    untrained = Gan(resolved.method_config)
    untrained.setup(ctx)
    noise = untrained.summarize(ctx)["quality/fd"]
    data = ctx.domains["data"]
    real = features(untrained.evaluator, to_network_range(data.train.images), ctx.device)
    held_out = features(untrained.evaluator, to_network_range(data.test.images), ctx.device)
    assert frechet_distance(held_out, real) < 0.05 * noise


def test_gan_resumed_after_ctrl_c_matches_an_uninterrupted_run(client) -> None:
    from helpers import Recorder

    from runner.errors import RunInterrupted
    from runner.runs.plugins import registered

    settings = [("train_subset", "256"), ("test_subset", "300"), ("epochs", "2"), ("quality_samples", "300")]
    whole = quiet(RunRequest("gan", overrides=[*settings, ("g_steps", "2"), ("flip", "0.1"), ("ema", "0.9")]))
    recorder = Recorder(interrupt_after=1)
    with registered(recorder, name="recorder"), pytest.raises(RunInterrupted):
        quiet(RunRequest("gan", overrides=[*settings, ("g_steps", "2"), ("flip", "0.1"), ("ema", "0.9")]))
    killed = next(c[1] for c in recorder.calls if c[0] == "start")
    resumed = quiet(RunRequest("gan", resume=killed))
    assert resumed.metrics == whole.metrics


def test_acgan_on_digits_logs_label_accuracy_and_a_row_per_class(client, tmp_path: Path) -> None:
    result = quiet(RunRequest("acgan", overrides=TINY))
    m = result.metrics
    assert 0 <= m["quality/label_acc"] <= 1
    assert "train/aux_acc" in m and "train/aux_fake_acc" in m
    figures = {f.path for f in client.list_artifacts(result.run_id, "figures")}
    assert "figures/classes.png" in figures
    out = tmp_path / "sevens.png"
    r = CliRunner().invoke(app, ["sample", result.run_id, "--n", "4", "--label", "7", "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["sample", result.run_id, "--label", "12", "--out", str(out)])
    assert r.exit_code == 1 and "0 (0)" in r.output


def _faces(root: Path, n_train: int = 96, n_test: int = 32) -> None:
    """A course-format face folder: 64x64 PNGs and CSVs; 'smiling' faces have a bright lower half."""
    rng = np.random.default_rng(0)
    face = root / "face"
    for split, n in (("train", n_train), ("test", n_test)):
        (face / split).mkdir(parents=True)
        rows = ["image_name,Male,Smiling"]
        for i in range(n):
            smiling = i % 2
            img = rng.integers(0, 90, size=(64, 64, 3), dtype=np.uint8)
            img[32:] += 150 * smiling
            Image.fromarray(img).save(face / split / f"{i:05d}.png")
            rows.append(f"{i:05d}.png,{(i // 2) % 2},{smiling}")
        (face / f"{split}.csv").write_text("\n".join(rows) + "\n")


def test_acgan_on_a_course_face_folder_with_an_attribute(client, tmp_path: Path) -> None:
    _faces(tmp_path / "data")
    overrides = [("attribute", "Smiling"), ("epochs", "1"), ("batch_size", "32"), ("quality_samples", "64")]
    overrides += [("ngf", "16"), ("ndf", "16"), ("grid", "8"), ("pairs", "4")]
    result = quiet(RunRequest("acgan", dataset="faces", overrides=overrides, data_root=str(tmp_path / "data")))
    assert result.status == "FINISHED"
    figures = {f.path for f in client.list_artifacts(result.run_id, "figures")}
    assert "figures/pairs.png" in figures
    r = CliRunner().invoke(app, ["sample", result.run_id, "--n", "2", "--label", "Smiling", "--out", "s.png"])
    assert r.exit_code == 0, r.output
    assert Image.open("s.png").size == (2 * 66 + 2, 66 + 2)

    r = CliRunner().invoke(
        app,
        ["run", "acgan", "--dataset", "faces", "--data-root", str(tmp_path / "data"), "--set", "attribute=Smilling"],
    )
    assert r.exit_code == 1
    assert "attribute='Smilling'" in r.output and "Male, Smiling" in r.output and "Traceback" not in r.output


def test_sample_names_a_run_without_a_generator(client, tmp_path: Path) -> None:
    from conftest import SMALL
    from helpers import run_baseline

    run = run_baseline(*SMALL, ("tsne_points", "0"))
    r = CliRunner().invoke(app, ["sample", run.run_id, "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "not a generator" in r.output
    r = CliRunner().invoke(app, ["sample", run.run_id, "--out", str(tmp_path / "x.gif")])
    assert r.exit_code == 1 and ".png" in r.output


def test_gan_over_seeds_reports_its_own_metric_as_mean_and_std(client) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "gan", "--seeds", "0,1", "--epochs", "1", "--set", "train_subset=256", "--set", "quality_samples=300"],
    )
    assert result.exit_code == 0, result.output
    assert "nan" not in result.stdout
    summary = [line for line in result.stdout.splitlines() if "(mean ± std over seeds 0,1)" in line]
    assert len(summary) == 1 and summary[0].startswith("quality/fd ") and " ± " in summary[0]
    parent_id = result.stdout.split("parent run ")[1].split(")")[0]
    metrics = client.get_run(parent_id).data.metrics
    assert {"quality/fd/mean", "quality/fd/std", "quality/kid/mean"} <= set(metrics)
