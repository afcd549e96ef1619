"""The path a plugin author walks: pip install a package, see it in `hw3 list` and `hw3 plugins`,
run it into MLflow, uninstall it; a broken package beside it; `hw3 new plugin` passing its tests.

Packages go into a throwaway virtual environment that sees this one's packages (through a .pth
file), so nothing is installed where other processes use hw3, and a failing test leaves no trace.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner import record
from runner.commands.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hw3-coral"
QUICK = ["--epochs", "1", "--set", "train_subset=256", "--set", "test_subset=200", "--set", "tsne_points=0"]


class Venv:
    """A virtual environment without pip of its own: it borrows this one's packages, pip included."""

    def __init__(self, path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
        self.python = str(path / "bin" / "python")
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # addsitedir, not a bare path line: it also runs the .pth files there (hw3's editable install).
        lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
        Path(purelib, "_hw3_test_parent.pth").write_text("\n".join(lines) + "\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HW3_LOAD", "HW3_STRICT", "PYTEST_"))}
        self.env["COLUMNS"] = "250"  # wide enough that rich tables never cut a package name or an error

    def run(self, *args: str, cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, *args], cwd=cwd, env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )

    def hw3(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("-c", "from runner.commands.cli import main; main()", *args, cwd=cwd, **env)

    def pip_install(self, *paths: Path, cwd: Path) -> None:
        # Offline when the packages' build backend (hatchling, as hw3's) is importable here;
        # otherwise pip fetches it from the package index into an isolated build environment.
        offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("hatchling") else []
        out = self.run("-m", "pip", "install", "-q", "--no-deps", *offline, *map(str, paths), cwd=cwd)
        assert out.returncode == 0, out.stderr[-3000:]

    def pip_uninstall(self, *names: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "pip", "uninstall", "-y", *names, cwd=cwd)

    def plugins(self, cwd: Path) -> dict[str, dict]:
        out = self.hw3("plugins", "--json", cwd=cwd)
        assert out.returncode == 0, out.stderr
        return {p["name"]: p for p in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return Venv(tmp_path_factory.mktemp("venv") / "env")


@pytest.fixture
def coral_source(tmp_path: Path) -> Path:
    """A copy of the example, so building it leaves no build/ or .egg-info in the repository."""
    dest = tmp_path / "hw3-coral"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return dest


@pytest.fixture
def installed(venv: Venv, tmp_path: Path) -> Iterator[list[str]]:
    """Distributions a test installs; uninstalled afterwards, whatever happened."""
    names: list[str] = []
    yield names
    if names:
        venv.pip_uninstall(*names, cwd=tmp_path)


def _broken_package(tmp_path: Path) -> Path:
    """A package whose entry-point module raises ImportError, as one with a missing dependency does."""
    pkg = tmp_path / "hw3-broken"
    pkg.mkdir()
    (pkg / "hw3_broken.py").write_text("raise ImportError('needs a missing library')\n")
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["hatchling>=1.18"]
            build-backend = "hatchling.build"

            [project]
            name = "hw3-broken"
            version = "0.0.1"

            [project.entry-points.hw3]
            broken = "hw3_broken"

            [tool.hatch.build.targets.wheel]
            only-include = ["hw3_broken.py"]
            """
        )
    )
    return pkg


def test_example_plugin_installs_lists_runs_into_mlflow_and_uninstalls(
    venv: Venv, coral_source: Path, installed: list[str], tmp_path: Path, client
) -> None:
    installed.append("hw3-coral")
    venv.pip_install(coral_source, cwd=tmp_path)

    listing = venv.hw3("list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "coral" in listing.stdout and "mnist-rotated" in listing.stdout and "hw3-coral" in listing.stdout
    assert "warning" not in listing.stderr
    coral = venv.plugins(tmp_path)["coral"]
    assert (coral["package"], coral["version"], coral["api"], coral["errors"]) == ("hw3-coral", "0.1.0", "1", [])
    assert coral["hooks"] == ["hw3_register_datasets", "hw3_register_methods", "hw3_register_validators"]
    assert not coral["builtin"] and "entropy" in listing.stdout and "Morerio" in listing.stdout

    ran = venv.hw3("run", "coral", "--pair", "mnist:mnistm", *QUICK, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_id = ran.stdout.split("\nrun ")[-1].split()[0]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "hw3-mnist-mnistm"  # beside the built-ins' runs
    assert run.data.tags["method"] == "coral" and run.data.tags["pair"] == "mnist:mnistm"
    assert run.data.params["coral_weight"] == "1.0" and run.data.params["layer"] == "logits"
    shared = {"target_acc", "source_acc", "validator/im", "proxy_a_distance", "validator/entropy"}
    assert shared <= set(run.data.metrics) and "train/loss/coral" in run.data.metrics
    # The package's own validator picks an epoch as the built-in ones do.
    assert {"selected/im/target_acc", "selected/entropy/target_acc"} <= set(record.selection(run))
    assert [m.step for m in client.get_metric_history(run_id, "target_acc")] == [1]
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert {"figures/curves.png", "figures/confusion_target.png", "figures/confusion_source.png"} <= figures

    tuned = venv.hw3(
        "tune", "coral", "--space", "coral_weight=0.1..10:log", "--trials", "2", "--select", "entropy",
        "--set", "epochs=1", "--set", "train_subset=256", "--set", "test_subset=200", cwd=tmp_path,
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "entropy (searched)" in tuned.stdout and "reality check: 2 finished trials" in tuned.stdout

    out = venv.pip_uninstall("hw3-coral", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    installed.clear()
    assert "coral" not in venv.plugins(tmp_path)


def test_broken_package_beside_the_example_is_named_and_the_rest_works(
    venv: Venv, coral_source: Path, installed: list[str], tmp_path: Path
) -> None:
    installed += ["hw3-broken", "hw3-coral"]
    venv.pip_install(_broken_package(tmp_path), coral_source, cwd=tmp_path)
    warning = "warning: plugin 'broken' (hw3-broken): import failed: ImportError: needs a missing library"

    listing = venv.hw3("list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "coral" in listing.stdout and "baseline" in listing.stdout
    assert warning in listing.stderr and "Traceback" not in listing.stderr
    plugins = venv.plugins(tmp_path)
    assert plugins["broken"]["package"] == "hw3-broken" and plugins["broken"]["version"] == "0.0.1"
    assert plugins["broken"]["errors"] == ["import failed: ImportError: needs a missing library"]
    assert plugins["coral"]["errors"] == []
    table = venv.hw3("plugins", cwd=tmp_path)
    assert "plugin API 1" in table.stdout and "hw3-broken" in table.stdout and "hw3-coral" in table.stdout
    assert "import failed: ImportError: needs a missing library" in table.stdout

    ran = venv.hw3("run", "baseline", *QUICK, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert warning in ran.stderr and "(FINISHED)" in ran.stdout

    strict = venv.hw3("list", cwd=tmp_path, HW3_STRICT_PLUGINS="1")
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines() == [
        "error: plugin 'broken' (hw3-broken): import failed: ImportError: needs a missing library "
        "[HW3_STRICT_PLUGINS=1]"
    ]


def test_new_plugin_installs_and_passes_its_own_tests(venv: Venv, installed: list[str], tmp_path: Path) -> None:
    made = CliRunner().invoke(app, ["new", "plugin", "demo", "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    assert f"pip install {tmp_path / 'demo'}" in made.stdout
    installed.append("hw3-demo")
    venv.pip_install(tmp_path / "demo", cwd=tmp_path)
    shutil.rmtree(tmp_path / "demo" / "build", ignore_errors=True)

    tests = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "demo", cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout
    plugins = venv.plugins(tmp_path)
    assert plugins["demo"]["package"] == "hw3-demo" and plugins["demo"]["errors"] == []


def test_example_passes_its_own_tests(venv: Venv, coral_source: Path) -> None:
    # `python -m pytest` puts the example's folder on sys.path: its tests need no install.
    tests = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=coral_source)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "8 passed" in tests.stdout
