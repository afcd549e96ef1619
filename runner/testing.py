"""What a plugin's own tests need: a sandbox, the plugin registered for one test, tiny data and a
one-epoch smoke run.

    # tests/conftest.py of a plugin package: makes the `hw3_env` fixture available
    from runner.testing import hw3_env  # noqa: F401

    # tests/test_plugin.py
    import my_package.plugin as plugin

    def test_one_epoch(hw3_env):
        hw3_env.register(plugin)
        result = hw3_env.run("my-method")  # one epoch on the tiny pair, on the CPU
        assert result.status == "FINISHED" and "target_acc" in result.metrics

Outside pytest, `with isolated() as env:` gives the same sandbox and `smoke_run(...)` does all
of it in one call. The sandbox never touches the user's `mlflow.db`, `~/.cache/hw3` or
`checkpoints/`, and loads no installed third-party plugin, so a test sees only hw3's built-ins,
the tiny datasets and the plugins it registers.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.datasets import DataContext, DatasetSpec, Split
from runner.hookspecs import hookimpl
from runner.runs.plugins import PluginInfo, get_manager, reset_manager

if TYPE_CHECKING:
    from runner.runs.execute import RunResult

TINY_SOURCE = "tiny-mnist"
TINY_TARGET = "tiny-colour"
TINY_PAIR = f"{TINY_SOURCE}:{TINY_TARGET}"
PER_CLASS = {"train": 30, "test": 10}  # 300 training and 100 test images per tiny dataset

# What a smoke run changes from the usual defaults: small and quick, on the CPU.
SMOKE_SETTINGS: dict[str, Any] = {
    "device": "cpu",
    "batch_size": 32,
    "log_every": 2,
    "tsne_points": 0,  # t-SNE is slow on a busy CPU; pass tsne_points=100 to test figures that use it
    "eval_batch_size": 500,
}
_ENV_KEYS = ("MLFLOW_TRACKING_URI", "HW3_CACHE_DIR", "HW3_DATA_ROOT", "HW3_LOAD_PLUGINS", "HW3_REGISTRY")


# -- the tiny datasets -----------------------------------------------------------------------
EMBEDDED = "mnist"  # the registered dataset the tiny ones are cut from, read from its embedded source


@functools.lru_cache(maxsize=1)
def _embedded_digits() -> dict[str, Split]:
    """The embedded MNIST digits, through the plugin manager as any plugin would get them;
    decoded once per process (every sandbox has its own cache folder)."""
    from runner.cache import data_context, load_dataset

    spec = get_manager().dataset(EMBEDDED)
    return load_dataset(spec, data_context().for_dataset(spec, {"source": "embedded"}))


def _tiny(split: Split, per_class: int, skip: int) -> Split:
    """`per_class` images of each digit, after the first `skip` of it, in a fixed order."""
    import torch

    idx = [torch.nonzero(split.labels == d).flatten()[skip : skip + per_class] for d in range(10)]
    return split.take(torch.stack(idx, 1).flatten())  # interleaved, so any prefix is balanced


def _colourise(split: Split, seed: int) -> Split:
    """Each digit in a random colour on a random background colour: a 3-channel domain shift."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n = len(split)
    fg, bg = torch.rand(n, 3, 1, 1, generator=gen), torch.rand(n, 3, 1, 1, generator=gen)
    ink = split.images.float() / 255
    images = (bg * (1 - ink) + fg * ink) * 255
    return Split(images.round().clamp(0, 255).to(torch.uint8), split.labels)


def _build(colour: bool) -> Any:
    def build(ctx: DataContext) -> dict[str, Split]:
        digits, out = _embedded_digits(), {}
        for i, (name, per_class) in enumerate(PER_CLASS.items()):
            # The target takes the next images of each digit: the two domains share none.
            split = _tiny(digits[name], per_class, skip=per_class if colour else 0)
            out[name] = _colourise(split, seed=i) if colour else split
        return out

    return build


def _fingerprint(ctx: DataContext) -> str:
    spec = get_manager().dataset(EMBEDDED)
    return f"tiny:{PER_CLASS}:{spec.fingerprint(ctx.for_dataset(spec, {'source': 'embedded'}))}"


DIGITS = tuple(str(d) for d in range(10))
TINY_DATASETS = (
    DatasetSpec(
        name=TINY_SOURCE,
        description="300 + 100 real MNIST digits for plugin tests (runner.testing)",
        channels=1,
        size=28,
        classes=DIGITS,
        build=_build(colour=False),
        fingerprint=_fingerprint,
        origin=lambda ctx: "embedded MNIST digits, a tiny part",
    ),
    DatasetSpec(
        name=TINY_TARGET,
        description="300 + 100 other MNIST digits in random colours on random colours (runner.testing)",
        channels=3,
        size=28,
        classes=DIGITS,
        build=_build(colour=True),
        fingerprint=_fingerprint,
        origin=lambda ctx: "embedded MNIST digits, coloured",
    ),
)


class TinyDatasets:
    """The plugin that registers the tiny datasets in a sandbox."""

    @hookimpl
    def hw3_register_datasets(self, register: Any) -> None:
        for spec in TINY_DATASETS:
            register(spec)


# -- the sandbox -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _process_dir() -> Path:
    """A folder for this process's dataset cache and template MLflow store, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="hw3-testing-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _template_store() -> Path:
    """An empty MLflow SQLite store, created (and its schema migrated, ~1 s) once per process."""
    db = _process_dir() / "template.db"
    if not db.exists():
        from mlflow import MlflowClient

        from runner.store import _quiet

        _quiet()
        MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


def _package_of(plugin: Any) -> tuple[str, str]:
    """The installed distribution a plugin's code comes from, if any, and its version."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    for dist in metadata.packages_distributions().get(module.split(".")[0], []):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return dist, metadata.version(dist)
    return "under-test", ""


@dataclass
class Hw3TestEnv:
    """A sandbox: its own MLflow store, data root, checkpoints and plugin manager, in `root`."""

    root: Path
    tracking_uri: str
    output: str = ""  # what the last `run` printed

    def register(self, plugin: Any, name: str | None = None, check: bool = True) -> PluginInfo:
        """Register `plugin` (a module or an object with `@hookimpl` functions) for this sandbox.

        Its register hooks run at once; with `check`, any error they record (a misspelt hook, a
        taken name, a bad `HW3_API`, an exception) fails the test with hw3's own message.
        """
        name = name or (plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__name__)
        package, version = _package_of(plugin)
        manager = get_manager()
        info = manager.register(plugin, name=name, package=package, version=version)
        manager.methods(), manager.datasets()
        if check and info.errors:
            raise AssertionError(f"plugin '{name}' ({package}): " + "; ".join(info.errors))
        return info

    def run(
        self,
        method: str,
        *,
        pair: str | None = None,
        dataset: str | None = None,
        epochs: int = 1,
        preset: str | None = None,
        **settings: Any,
    ) -> RunResult:
        """Run `method` to the end, tracked in the sandbox's MLflow store, and return its result.

        Adaptation methods run on the tiny pair and generative ones on the tiny MNIST unless
        `pair` or `dataset` says otherwise; `settings` are `--set` keys (run settings or the
        method's own), over the quick `SMOKE_SETTINGS`. Raises what `hw3 run` would report.
        """
        from rich.console import Console

        from runner.runs.execute import RunRequest, execute

        if pair is None and dataset is None:
            kind = get_manager().method(method).kind
            pair, dataset = (TINY_PAIR, None) if kind == "adapt" else (None, TINY_SOURCE)
        values = {**SMOKE_SETTINGS, "checkpoint_dir": str(self.root / "checkpoints"), "epochs": epochs, **settings}
        self._store()
        buf = io.StringIO()
        try:
            return execute(
                RunRequest(method, pair=pair, dataset=dataset, preset=preset, overrides=list(values.items())),
                Console(file=buf, width=120),
            )
        finally:
            self.output = buf.getvalue()

    def registry(self, toml: str) -> Path:
        """Use these registry.toml tables (merged over hw3's, as HW3_REGISTRY does) in the sandbox,
        such as `[datasets.NAME]` options or `[methods.NAME]` defaults."""
        path = self.root / "registry.toml"
        path.write_text(toml)
        os.environ["HW3_REGISTRY"] = str(path)
        return path

    def load(self, dataset: str) -> dict[str, Split]:
        """The splits of `dataset` as a run reads them (its registry options applied, cached),
        before any subset, resizing or channel conversion."""
        from runner.cache import load_dataset
        from runner.commands.data import context_for

        spec = get_manager().dataset(dataset)
        return load_dataset(spec, context_for(spec, None))

    def mlflow_run(self, run_id: str) -> Any:
        """The MLflow run (params, metrics, tags, status) as `mlflow ui` would show it."""
        return self.client().get_run(run_id)

    def client(self) -> Any:
        """An `MlflowClient` on the sandbox's store, such as for `list_artifacts(run_id)`."""
        from mlflow import MlflowClient

        self._store()
        return MlflowClient(self.tracking_uri)

    def cli(self, *args: str) -> Any:
        """Invoke `hw3 ARGS...` in the sandbox; returns click's `Result` (exit_code, stdout, stderr)."""
        from typer.testing import CliRunner

        from runner.commands.cli import app

        return CliRunner().invoke(app, list(args))

    def _store(self) -> None:
        db = self.root / "mlflow.db"
        if not db.exists():
            shutil.copyfile(_template_store(), db)


@contextlib.contextmanager
def isolated(root: str | os.PathLike[str] | None = None) -> Iterator[Hw3TestEnv]:
    """A sandbox for the length of a `with` block: MLflow store, data root, checkpoints and the
    working folder in `root` (a temporary folder, removed afterwards, when None), a dataset
    cache shared by this process, and a fresh plugin manager that loads hw3's built-ins and the
    tiny datasets but no installed third-party plugin. The environment is restored afterwards."""
    owned = root is None
    base = Path(tempfile.mkdtemp(prefix="hw3-test-") if root is None else root).resolve()
    base.mkdir(parents=True, exist_ok=True)
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    cwd = os.getcwd()
    mlflow_uri = _mlflow_uri(saved["MLFLOW_TRACKING_URI"])
    env = Hw3TestEnv(root=base, tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
    os.environ.update(
        MLFLOW_TRACKING_URI=env.tracking_uri,
        HW3_CACHE_DIR=str(_process_dir() / "cache"),
        HW3_DATA_ROOT=str(base / "data"),  # empty: datasets use their offline sources
        HW3_LOAD_PLUGINS="",  # installed third-party plugins stay out; tests register theirs
    )
    os.environ.pop("HW3_REGISTRY", None)
    os.chdir(base)  # MLflow's artifacts and anything else relative land in the sandbox
    reset_manager()
    try:
        get_manager().register(TinyDatasets(), name="hw3-testing", package="hw3", version=_version())
        yield env
    finally:
        reset_manager()
        os.chdir(cwd)
        if "mlflow" in sys.modules:  # a run sets mlflow's process-wide URI (and the variable): put it back
            sys.modules["mlflow"].set_tracking_uri(mlflow_uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if owned:
            shutil.rmtree(base, ignore_errors=True)


def smoke_run(
    method: str,
    plugin: Any = None,
    *,
    name: str | None = None,
    root: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Register `plugin` (if given) in a fresh sandbox and run `method` for one epoch there.

    The sandbox's folder (`root`, or a new temporary folder) is kept, so the run can still be
    read back from `result.tracking_uri`; `kwargs` are those of `Hw3TestEnv.run`.
    """
    with isolated(root if root is not None else tempfile.mkdtemp(prefix="hw3-smoke-")) as env:
        if plugin is not None:
            env.register(plugin, name)
        return env.run(method, **kwargs)


def _mlflow_uri(from_env: str | None) -> str | None:
    """The tracking URI mlflow's own functions use now, to restore when the sandbox closes."""
    mlflow = sys.modules.get("mlflow")
    return mlflow.get_tracking_uri() if mlflow is not None else from_env


def _version() -> str:
    from runner.version import __version__

    return __version__


try:  # the fixture exists where pytest does: in a plugin's tests
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def hw3_env(tmp_path: Path) -> Iterator[Hw3TestEnv]:
        """A `Hw3TestEnv` sandbox in the test's `tmp_path`; plugins registered in it last one test."""
        with isolated(tmp_path) as env:
            yield env
