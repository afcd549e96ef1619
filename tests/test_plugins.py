"""The plugin manager: entry points, registration, errors pinned on the right plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import MethodsPlugin, NanAt

from plugins.methods.baseline import Baseline
from runner import hookimpl
from runner.errors import Hw3Error
from runner.plugins import PluginManager, get_manager, registered


def test_builtins_come_from_entry_points() -> None:
    manager = get_manager()
    for name in ("baseline", "mnist", "mnistm"):
        info = manager.infos[name]
        assert info.package == "hw3" and info.builtin and not info.errors
    assert manager.methods()["baseline"].obj is Baseline
    assert set(manager.datasets()) >= {"mnist", "mnistm"}


def test_registered_for_one_block_only() -> None:
    with registered(MethodsPlugin(NanAt), name="nan-plugin") as info:
        assert "nan-at" in get_manager().methods()
        assert info.hooks == ["hw3_register_methods"]
    assert "nan-at" not in get_manager().methods()


def test_duplicate_name_keeps_first_and_names_both_packages() -> None:
    class Impostor(Baseline):
        name = "baseline"

    manager = get_manager()
    manager.register(MethodsPlugin(Impostor), name="impostor", package="hw3-impostor")
    assert manager.methods()["baseline"].obj is Baseline
    (error,) = manager.infos["impostor"].errors
    assert "method 'baseline' is already registered by hw3" in error


def test_register_hook_that_raises_is_reported_and_others_still_work() -> None:
    class Broken:
        @hookimpl
        def hw3_register_methods(self, register):
            raise RuntimeError("boom")

    manager = get_manager()
    manager.register(Broken(), name="broken", package="hw3-broken")
    assert "baseline" in manager.methods()
    assert manager.infos["broken"].errors == ["hw3_register_methods raised RuntimeError: boom"]
    assert any("hw3-broken" in line for line in manager.problems())


def test_misspelt_hook_is_an_error_with_a_suggestion() -> None:
    class Misspelt:
        @hookimpl
        def hw3_register_method(self, register):
            register(NanAt)

    info = get_manager().register(Misspelt(), name="misspelt")
    assert "unknown hook 'hw3_register_method' (did you mean 'hw3_register_methods'?)" in info.errors[0]
    assert "nan-at" not in get_manager().methods()


def test_registering_a_non_method_is_rejected() -> None:
    class NotAMethod:
        name = "x"

    info = get_manager().register(MethodsPlugin(NotAMethod), name="bad")
    get_manager().methods()
    assert "not a subclass of runner.Method" in info.errors[0]


def test_strict_mode_turns_warnings_into_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW3_STRICT_PLUGINS", "1")

    class Misspelt:
        @hookimpl
        def hw3_run_starts(self, run):
            pass

    with pytest.raises(Hw3Error, match="HW3_STRICT_PLUGINS"):
        get_manager().register(Misspelt(), name="misspelt")


def _fake_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution with an `hw3` entry point, as pip would leave it."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[hw3]\n{module} = {module}\n")


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "hw3-broken", "hw3_broken", "raise ImportError('needs a missing library')\n")
    _fake_distribution(
        site,
        "hw3-extra",
        "hw3_extra",
        """
        from plugins.methods.baseline import Baseline
        from runner import hookimpl

        class Extra(Baseline):
            name = "extra"
            description = "a third-party method"

        @hookimpl
        def hw3_register_methods(register):
            register(Extra)
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_third_party_entry_points_load_after_builtins(third_party: Path) -> None:
    manager = PluginManager()
    manager.load_entry_points()
    names = list(manager.infos)
    assert names.index("hw3_extra") > names.index("baseline")
    assert manager.infos["hw3_extra"].package == "hw3-extra" and manager.infos["hw3_extra"].version == "1.2.3"
    assert manager.methods()["extra"].package == "hw3-extra"
    broken = manager.infos["hw3_broken"]
    assert broken.package == "hw3-broken"
    assert broken.errors == ["import failed: ImportError: needs a missing library"]


def test_load_plugins_env_chooses_third_party_plugins(third_party: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW3_LOAD_PLUGINS", "hw3-extra")
    manager = PluginManager()
    manager.load_entry_points()
    assert "hw3_extra" in manager.infos and "hw3_broken" not in manager.infos
    monkeypatch.setenv("HW3_LOAD_PLUGINS", "")
    manager = PluginManager()
    manager.load_entry_points()
    assert not any(not i.builtin for i in manager.infos.values())
    assert "baseline" in manager.methods()  # built-ins always load


def test_broken_plugin_leaves_the_cli_working(third_party: Path) -> None:
    env = {"PYTHONPATH": str(third_party), "PATH": ""}
    hw3 = [sys.executable, "-c", "from runner.cli import main; main()"]
    listing = subprocess.run([*hw3, "list"], capture_output=True, text=True, env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "extra" in listing.stdout and "baseline" in listing.stdout
    assert "warning: plugin 'hw3_broken' (hw3-broken): import failed" in listing.stderr
    plugins = subprocess.run([*hw3, "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert plugins.returncode == 0, plugins.stderr
    assert '"import failed: ImportError: needs a missing library"' in plugins.stdout


def test_hooks_may_take_a_subset_of_their_arguments_and_add_commands() -> None:
    import typer
    from typer.testing import CliRunner

    seen = []

    class Partial:
        @hookimpl
        def hw3_epoch_end(self, epoch):
            seen.append(epoch)

        @hookimpl
        def hw3_register_commands(self, app):
            @app.command()
            def hello(name: str = "world") -> None:
                """Say hello."""
                typer.echo(f"hello {name}")

    manager = get_manager()
    manager.register(Partial(), name="partial")
    manager.epoch_end(run=None, epoch=3, metrics={})
    assert seen == [3]
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        pass

    manager.add_commands(app)
    result = CliRunner().invoke(app, ["hello", "--name", "hw3"])
    assert result.exit_code == 0 and result.stdout.strip() == "hello hw3"


def test_every_hook_is_in_the_plugin_authors_reference() -> None:
    from runner.plugins import HOOK_NAMES

    reference = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    missing = [h for h in HOOK_NAMES if f"`{h}`" not in reference]
    assert not missing, f"docs/plugins.md lacks {missing}"
