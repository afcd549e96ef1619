"""What hw3 gives plugin authors: the public API, the API version check, runner.testing, and the
`hw3 new plugin` scaffold's checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import MethodsPlugin
from typer.testing import CliRunner

from plugins.methods.baseline import Baseline
from runner import hookimpl, testing
from runner.commands.cli import app
from runner.errors import Hw3Error
from runner.runs.plugins import get_manager
from runner.testing import TINY_PAIR, TINY_SOURCE, TINY_TARGET, isolated, smoke_run

hw3_env = testing.hw3_env  # the fixture plugin authors import into their conftest.py


def test_import_runner_stays_cheap_and_the_rest_of_the_api_loads_on_demand() -> None:
    probe = (
        "import sys, runner\n"
        "assert not {'torch', 'mlflow'} & set(sys.modules), 'import runner imported torch or mlflow'\n"
        "from runner import DataContext, DataError, DatasetSpec, Hw3Error, Method, Split, hookimpl, option\n"
        "assert 'torch' not in sys.modules\n"
        "from runner import AdaptMethod, Batch, RunContext\n"
        "import runner.context, runner.adapt, runner.adapt.method as home\n"
        "assert RunContext is runner.context.RunContext and Batch is runner.context.Batch\n"
        "assert AdaptMethod is home.AdaptMethod is runner.adapt.AdaptMethod\n"
        "assert set(runner.__all__) <= set(dir(runner))\n"
        "try:\n    runner.NoSuchName\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "module 'runner' has no attribute 'NoSuchName'"


class Wants:
    """A plugin stating the plugin API version it was written for."""

    def __init__(self, api: object) -> None:
        self.HW3_API = api

    @hookimpl
    def hw3_register_methods(self, register):
        class Versioned(Baseline):
            name = "versioned"

        register(Versioned)


def test_plugin_needing_another_api_version_is_refused_with_a_named_error() -> None:
    manager = get_manager()
    info = manager.register(Wants("2"), name="future", package="hw3-future", version="3.0")
    assert info.errors == ["needs plugin API 2, but hw3 0.1.0 provides plugin API 1; upgrade hw3"]
    assert info.api == "2" and "versioned" not in manager.methods()
    assert "plugin 'future' (hw3-future): needs plugin API 2" in manager.problems()[0]
    shown = CliRunner().invoke(app, ["plugins", "--json"])
    assert '"api": "2"' in shown.stdout and "needs plugin API 2" in shown.stdout

    old = manager.register(Wants("0"), name="old", package="hw3-old")
    assert old.errors[0].endswith("install a release of the plugin made for this hw3")
    bad = manager.register(Wants("one"), name="bad", package="hw3-bad")
    assert bad.errors == ["HW3_API = 'one' is not a plugin API version; write a whole number such as \"1\""]


def test_plugin_written_for_this_api_version_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW3_STRICT_PLUGINS", "1")
    info = get_manager().register(Wants(1), name="current")
    assert info.errors == [] and info.api == "1" and "versioned" in get_manager().methods()
    with pytest.raises(Hw3Error, match=r"plugin 'next' \(in-process\): needs plugin API 2.*HW3_STRICT_PLUGINS=1"):
        get_manager().register(Wants("2"), name="next")


def test_sandbox_is_isolated_and_restores_everything(tmp_path: Path) -> None:
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "HW3_CACHE_DIR", "HW3_LOAD_PLUGINS")}
    cwd = os.getcwd()
    with isolated(tmp_path / "box") as env:
        assert os.getcwd() == str(tmp_path / "box")
        assert os.environ["MLFLOW_TRACKING_URI"] == env.tracking_uri == f"sqlite:///{tmp_path / 'box' / 'mlflow.db'}"
        assert os.environ["HW3_LOAD_PLUGINS"] == ""  # installed third-party plugins stay out
        datasets = get_manager().datasets()
        assert datasets[TINY_SOURCE].package == "hw3" and "mnist" in datasets
        info = env.register(MethodsPlugin(int), name="x", check=False)
        assert "not a subclass of runner.Method" in info.errors[0]

        class Misspelt:
            @hookimpl
            def hw3_register_method(self, register):
                pass

        with pytest.raises(AssertionError, match="plugin 'misspelt' .*did you mean 'hw3_register_methods'"):
            env.register(Misspelt(), name="misspelt")
    assert {k: os.environ.get(k) for k in before} == before and os.getcwd() == cwd
    assert "x" not in get_manager().infos and TINY_SOURCE not in get_manager().datasets()


def test_tiny_datasets_are_small_balanced_and_disjoint() -> None:
    from runner.data import data_context, load_dataset

    with isolated():
        manager = get_manager()
        src = load_dataset(manager.dataset(TINY_SOURCE), data_context())
        tgt = load_dataset(manager.dataset(TINY_TARGET), data_context())
    assert src["train"].images.shape == (300, 1, 28, 28) and src["test"].images.shape == (100, 1, 28, 28)
    assert tgt["train"].images.shape == (300, 3, 28, 28) and tgt["test"].images.shape == (100, 3, 28, 28)
    for split in (src["train"], src["test"], tgt["train"], tgt["test"]):
        assert torch.bincount(split.labels, minlength=10).tolist() == [len(split) // 10] * 10
    assert torch.equal(src["train"].labels[:10], torch.arange(10))  # interleaved: any prefix is balanced
    from runner.testing import _embedded_digits, _tiny

    digits = _embedded_digits()["train"]
    first, second = _tiny(digits, 30, skip=0), _tiny(digits, 30, skip=30)
    assert torch.equal(first.images, src["train"].images)
    assert not {bytes(x.numpy()) for x in first.images} & {bytes(x.numpy()) for x in second.images}


def test_smoke_run_tracks_in_its_own_store_and_leaves_the_sessions_alone(client, tmp_path: Path) -> None:
    result = smoke_run("quick", MethodsPlugin(_Quick), name="quick-plugin", root=tmp_path / "smoke")
    assert result.status == "FINISHED" and result.resolved.pair == TINY_PAIR
    assert result.resolved.settings.epochs == 1 and result.resolved.settings.device == "cpu"
    assert "target_acc" in result.metrics and result.tracking_uri == f"sqlite:///{tmp_path / 'smoke' / 'mlflow.db'}"
    assert client.get_experiment_by_name("hw3-tiny-mnist-tiny-colour") is None


class _Quick(Baseline):
    name = "quick"


def test_hw3_env_fixture_runs_a_method_and_reads_it_back(hw3_env) -> None:
    hw3_env.register(MethodsPlugin(_Quick), name="quick-plugin")
    result = hw3_env.run("quick", train_on="both", batch_size=50)
    run = hw3_env.mlflow_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["train_on"] == "both"
    assert run.data.params["batch_size"] == "50" and "quick on tiny-mnist:tiny-colour" in hw3_env.output
    assert Path(result.checkpoint).is_relative_to(hw3_env.root)
    listed = hw3_env.cli("list")
    assert listed.exit_code == 0 and "quick" in listed.stdout and TINY_TARGET in listed.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Demo", "plugin name 'Demo': use lowercase letters and digits"),
        ("my method", "plugin name 'my method': use lowercase"),
        ("1st", "plugin name '1st': use lowercase"),
        ("dann", "plugin name 'dann' is taken by a built-in of hw3"),
    ],
)
def test_new_plugin_refuses_bad_names_in_one_line(tmp_path: Path, name: str, message: str) -> None:
    result = CliRunner().invoke(app, ["new", "plugin", name, "--dir", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_new_plugin_refuses_an_existing_folder_and_writes_a_lint_clean_package(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    result = CliRunner().invoke(app, ["new", "plugin", "taken", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "already exists; choose another name or another --dir" in result.stderr
    assert not list((tmp_path / "taken").iterdir())

    result = CliRunner().invoke(app, ["new", "plugin", "my-method", "--dir", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "new" / "my-method"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "hw3_my_method/__init__.py",
        "hw3_my_method/method.py",
        "hw3_my_method/plugin.py",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/test_plugin.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "hw3-my-method"' in pyproject and 'my-method = "hw3_my_method.plugin"' in pyproject
    assert "{{" not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    assert "class MyMethod(AdaptMethod[MyMethodConfig])" in (root / "hw3_my_method" / "method.py").read_text()
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.exists():  # the generated package passes its own lint settings
        for cmd in (["check", "."], ["format", "--check", "."]):
            out = subprocess.run([str(ruff), *cmd], cwd=root, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stdout + out.stderr
