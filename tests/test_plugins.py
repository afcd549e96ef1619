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
from runner.runs.plugins import PluginManager, get_manager, registered


@pytest.fixture
def hw3_sandbox(tmp_path: Path):
    from runner.testing import isolated

    with isolated(tmp_path) as env:
        yield env


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
    hw3 = [sys.executable, "-c", "from runner.commands.cli import main; main()"]
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
    from runner.runs.plugins import HOOK_NAMES

    reference = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    missing = [h for h in HOOK_NAMES if f"`{h}`" not in reference]
    assert not missing, f"docs/plugins.md lacks {missing}"


def test_lifecycle_hooks_run_in_pluggys_order_with_tryfirst_and_wrappers(hw3_sandbox) -> None:
    calls: list[str] = []

    class A:
        @hookimpl
        def hw3_run_end(self, status):
            calls.append("A")

    class B:
        @hookimpl(tryfirst=True)
        def hw3_run_end(self, status):
            calls.append("B")

    class W:
        @hookimpl(wrapper=True)
        def hw3_run_end(self, status):
            calls.append("W-in")
            result = yield
            calls.append("W-out")
            return result

    with registered(A(), name="a"), registered(B(), name="b"), registered(W(), name="w"):
        result = hw3_sandbox.run("baseline", epochs=1)
    assert result.status == "FINISHED"
    assert calls == ["W-in", "B", "A", "W-out"]


def test_a_lifecycle_hook_error_names_the_plugin_that_raised_even_inside_a_wrapper(hw3_sandbox) -> None:
    class Quiet:
        @hookimpl
        def hw3_run_start(self, run):
            pass

    class Loud:
        @hookimpl
        def hw3_run_start(self, run):
            raise RuntimeError("tracker down")

    class Around:
        @hookimpl(wrapper=True)
        def hw3_run_start(self, run):
            return (yield)

    loud = r"plugin 'loud' \(in-process\) raised in hw3_run_start: RuntimeError"
    with (
        registered(Quiet(), "quiet"),
        registered(Loud(), "loud"),
        registered(Around(), "around"),
        pytest.raises(Hw3Error, match=loud),
    ):
        hw3_sandbox.run("baseline", epochs=1)


def test_resolve_dataset_takes_the_first_answer_in_pluggys_order() -> None:
    from runner import DatasetSpec

    def spec(name: str) -> DatasetSpec:
        return DatasetSpec(name, "", 1, 28, ("0",), build=lambda ctx: {}, fingerprint=lambda ctx: name)

    class Declines:
        @hookimpl
        def hw3_resolve_dataset(self, name):
            return None

    class Answers:
        @hookimpl
        def hw3_resolve_dataset(self, name):
            return spec(f"answered-{name}") if name.startswith("x-") else None

    class Late:
        @hookimpl(trylast=True)
        def hw3_resolve_dataset(self, name):
            return spec("late")

    manager = get_manager()
    for plugin, name in ((Late(), "late"), (Answers(), "answers"), (Declines(), "declines")):
        manager.register(plugin, name=name)
    assert manager.dataset("x-1").name == "answered-x-1"
    assert manager.datasets()["x-1"].plugin == "answers"
    assert manager.dataset("other").name == "late"  # the trylast one answers only when no other does


def test_two_instances_of_one_plugin_class_are_told_apart() -> None:
    class Extra(Baseline):
        name = "extra-method"

    class Other(Baseline):
        name = "other-method"

    manager = get_manager()
    manager.register(MethodsPlugin(Extra), name="first-instance")
    manager.register(MethodsPlugin(Other), name="second-instance")
    assert manager.methods()["extra-method"].plugin == "first-instance"
    assert manager.methods()["other-method"].plugin == "second-instance"


def test_a_resolver_that_raises_is_reported_and_the_next_one_answers() -> None:
    from runner import DatasetSpec

    class Buggy:
        @hookimpl(tryfirst=True)
        def hw3_resolve_dataset(self, name):
            raise KeyError("oops")

    class Fine:
        @hookimpl
        def hw3_resolve_dataset(self, name):
            if name == "x-fine":
                return DatasetSpec(name, "", 1, 28, ("0",), build=lambda ctx: {}, fingerprint=lambda ctx: "")
            return None

    class Around:  # a wrapper sees the answer but is not the one who gave it
        @hookimpl(wrapper=True)
        def hw3_resolve_dataset(self, name):
            return (yield)

    manager = get_manager()
    for plugin, name in ((Fine(), "fine"), (Buggy(), "buggy"), (Around(), "around")):
        manager.register(plugin, name=name)
    assert manager.dataset("x-fine").name == "x-fine"
    assert manager.datasets()["x-fine"].plugin == "fine"
    assert manager.infos["buggy"].errors == ["hw3_resolve_dataset raised KeyError: 'oops'"]


def test_an_error_no_plugin_raised_is_one_line_naming_the_hook() -> None:
    class TwoYields:
        @hookimpl(wrapper=True)
        def hw3_register_methods(self, register):
            yield
            yield

    get_manager().register(TwoYields(), name="two-yields")
    with pytest.raises(Hw3Error, match="calling hw3_register_methods failed and no plugin could be named"):
        get_manager().methods()


def test_strict_mode_says_the_problem_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotAMethod:
        name = "x"

    manager = get_manager()
    monkeypatch.setenv("HW3_STRICT_PLUGINS", "1")
    manager.register(MethodsPlugin(NotAMethod), name="bad")
    with pytest.raises(Hw3Error) as info:
        manager.methods()
    assert str(info.value).count("HW3_STRICT_PLUGINS") == 1 and "not a subclass of runner.Method" in str(info.value)
