"""The MLflow store hw3 reads and writes: where it is (`sqlite:///mlflow.db` in the working
folder, which `mlflow ui` opens there; MLFLOW_TRACKING_URI wins when it is set), the probe that
makes an unreachable one a one-line error, and `Store`, every query hw3 makes of it.

A process opens each store once (`reader()`): the probe, the SQLite migration lock and MLflow's
client are paid once, however many runs the process makes or reads; `reap_orphans` tidies it
once per process too. Writing one run is `runner.tracking.Tracker`'s job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import record
from runner.errors import Hw3Error
from runner.scheduler import live_jobs

if TYPE_CHECKING:
    import torch

DEFAULT_URI = "sqlite:///mlflow.db"
WEIGHTS = "weights"  # a run's artifact folder of plain model weights (state.pt) and how to rebuild them (spec.json)
VIEW_KEY = "hw3"  # the experiment's shared UI view (`mlflow.sharedViewState.hw3`) that hw3's links open


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _quiet() -> None:
    # MLflow's store migrations and alembic print pages of INFO lines on a new database.
    for name in ("alembic", "mlflow", "mlflow.store", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # With tqdm installed (Optuna brings it) MLflow draws a progress bar for every artifact it
    # downloads, a config.json included: noise between hw3's own lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store's file; nothing for other stores."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _retry(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """SQLite allows one writer at a time: several `hw3 run` processes retry briefly."""
    delay = 0.2
    for attempt in range(8):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if "locked" not in str(exc).lower() or attempt == 7:
                raise
            time.sleep(delay)
            delay *= 2


PROBE_TIMEOUT_S = 5.0
SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def check_scheme(uri: str) -> None:
    """A tracking URI MLflow can keep runs in, or one line saying which work."""
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return  # a folder
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in SCHEMES:
        raise Hw3Error(
            f"MLFLOW_TRACKING_URI={uri}: '{scheme}' is not a tracking store; use sqlite:///path/mlflow.db, "
            "http(s)://HOST:PORT (an MLflow server), a folder path, or a database URI (postgresql://, mysql://)"
        )


def _why(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _fix(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, PermissionError) or "readonly" in text or "read-only" in text or "permission" in text:
        return "; hw3 needs to write there: run in a folder you can write, or point MLFLOW_TRACKING_URI elsewhere"
    return ""


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A tracking server that does not answer is one clear error now, before any data or training,
    rather than MLflow's own retries, which go on for minutes."""
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    if not uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # never print a password
    try:
        urllib.request.urlopen(shown.rstrip("/") + "/health", timeout=timeout).close()
        return
    except urllib.error.HTTPError:
        return  # it answered (perhaps behind auth, or a proxy without /health): MLflow takes over
    except urllib.error.URLError as exc:
        reason: object = exc.reason
    except (OSError, ValueError) as exc:  # a timeout after connecting; a malformed address
        reason = exc
    if isinstance(reason, ssl.SSLError):
        return  # TLS is MLflow's business (MLFLOW_TRACKING_SERVER_CERT_PATH, ...); the server is up
    why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    start = "start the server"
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
        start = f"start it (mlflow server --host {parts.hostname} --port {parts.port})"
    raise Hw3Error(
        f"cannot reach the MLflow tracking server {shown} ({why.lower()}): {start}, "
        f"or unset MLFLOW_TRACKING_URI to log to the local {DEFAULT_URI}"
    )


class Store:
    """A thin layer over `MlflowClient` for reading runs, addressed by run ID (no global active
    run): searches, records, artifacts, models, and the experiments runs go in."""

    def __init__(self, uri: str | None = None) -> None:
        _quiet()
        self.uri = uri or tracking_uri()
        check_scheme(self.uri)
        check_reachable(self.uri)
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(self.uri)
        try:
            # Opening a SQLite store creates or migrates it; two processes doing that at once
            # corrupt each other's migration, so they take turns.
            with _store_lock(self.uri):
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise Hw3Error(f"cannot open the MLflow store {self.uri}: {_why(exc)}{_fix(exc)}") from None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A store call, retried while SQLite is locked; a failure is one line naming the store."""
        try:
            return _retry(fn, *args, **kwargs)
        except Hw3Error:
            raise
        except Exception as exc:
            what = getattr(fn, "__name__", "a write").replace("_", " ")
            raise Hw3Error(f"MLflow store {self.uri}: {what} failed: {_why(exc)}{_fix(exc)}") from None

    def find_run(self, run_id: str, what: str = "--resume") -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            recent = self.recent_runs()
            hint = f"; recent runs: {', '.join(recent)}" if recent else ""
            raise Hw3Error(f"{what} {run_id}: no such run in {self.uri}{hint}") from None

    def recent_runs(self, n: int = 5) -> list[str]:
        try:
            exps = [e.experiment_id for e in self.client.search_experiments()]
            runs = self.client.search_runs(exps, max_results=n, order_by=["attributes.start_time DESC"])
        except Exception:
            return []
        return [f"{r.info.run_id} ({r.data.tags.get(record.METHOD, '?')}, {r.info.status})" for r in runs]

    def experiment_id(self, name: str) -> str:
        """The experiment's ID, created (in the UI's training view) when it is new."""
        from mlflow.exceptions import MlflowException

        try:
            exp = _retry(self.client.get_experiment_by_name, name)
            if exp is not None:
                return exp.experiment_id
            # Training runs, not the GenAI view MLflow 3's UI opens new experiments in.
            return _retry(self.client.create_experiment, name, tags={record.EXPERIMENT_KIND: record.TRAINING_KIND})
        except MlflowException as exc:
            if "already exists" not in str(exc):  # another process created it a moment ago
                raise Hw3Error(f"MLflow at {self.uri}: {str(exc).splitlines()[0]}") from None
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise Hw3Error(f"MLflow at {self.uri}: experiment {name!r} exists and cannot be read") from None
            return again.experiment_id
        except Hw3Error:
            raise
        except Exception as exc:
            raise Hw3Error(f"cannot reach the MLflow store {self.uri}: {str(exc).splitlines()[0]}") from None

    # -- reads: every MLflow query hw3 makes -------------------------------------------------------
    def experiment_of(self, run_id: str) -> str:
        return self.find_run(run_id, "run").info.experiment_id

    def experiment_name(self, experiment_id: str) -> str:
        return self._call(self.client.get_experiment, experiment_id).name

    def search(self, where: str = "", *, experiments: str = "", status: str = "", limit: int = 5000) -> list[Any]:
        """Runs newest first: those matching MLflow filter `where`, in experiments whose names
        start with `experiments` (every one when empty), with `status` when given."""
        exps = self.experiment_ids(experiments)
        if not exps:
            return []
        clauses = [c for c in (where, f"attributes.status = '{status}'" if status else "") if c]
        return self._call(
            self.client.search_runs,
            exps,
            filter_string=" and ".join(clauses),
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )

    def holder(self, item: record.SuiteItem) -> Any | None:
        """The run that makes a suite's item: the first started of its runs still training or
        finished (ties go to the smaller run ID), so that two processes making the same item
        agree on which of their runs goes on. None when it has none."""
        where = (
            f"tags.`{record.SUITE}` = '{item.suite}' and tags.`{record.SUITE_ITEM}` = '{item.item}' "
            f"and tags.`{record.SUITE_SETTINGS}` = '{item.settings}'"
        )
        live = [r for r in self.search(where) if r.info.status in ("RUNNING", "FINISHED")]
        return min(live, key=lambda r: (r.info.start_time, r.info.run_id), default=None)

    def experiment_ids(self, prefix: str = "") -> list[str]:
        """The experiments whose names start with `prefix`."""
        try:
            return [e.experiment_id for e in self.client.search_experiments() if e.name.startswith(prefix)]
        except Exception as exc:
            raise Hw3Error(f"MLflow store {self.uri}: cannot list experiments: {_why(exc)}") from None

    def record(self, run_id: str) -> record.RunRecord:
        return record.RunRecord.from_run(self.find_run(run_id, "run"))

    def artifact(self, run_id: str, path: str, dst: str | None = None) -> Path:
        """A run's artifact as a local file (downloaded from a server)."""
        return Path(self._call(self.client.download_artifacts, run_id, path, dst))

    def read_bytes(self, run_id: str, path: str) -> bytes | None:
        """A run's artifact's contents, or None when the run has no file at `path`."""
        folder, _, name = path.rpartition("/")
        if name not in self.artifacts(run_id, folder):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return self.artifact(run_id, path, tmp).read_bytes()

    def artifacts(self, run_id: str, folder: str) -> list[str]:
        """The file names in a run's artifact folder."""
        return [a.path.rsplit("/", 1)[-1] for a in self._call(self.client.list_artifacts, run_id, folder)]

    def metric_history(self, run_id: str, key: str) -> list[float]:
        return [m.value for m in sorted(self._call(self.client.get_metric_history, run_id, key), key=lambda m: m.step)]

    def config_of(self, run_id: str) -> dict[str, Any]:
        """The resolved config a run logged (`config.json`)."""
        try:
            return json.loads(self.artifact(run_id, "config.json").read_text())
        except Exception:
            raise Hw3Error(f"run {run_id} has no config.json artifact; it was not made by hw3 run") from None

    # -- what a person sees in the UI ----------------------------------------------------------------
    def share_view(self, experiment_id: str, columns: tuple[str, ...]) -> None:
        """The experiment's runs table as hw3's links open it: its metrics beside the run names,
        newest first (MLflow's shared view, an experiment tag the UI reads through `viewStateShareKey`)."""
        view = {
            "orderByKey": "attributes.start_time",
            "orderByAsc": False,
            "selectedColumns": [
                "attributes.`Source`",
                "attributes.`Models`",
                *(f"metrics.`{key}`" for key in columns),
            ],
        }
        # A store that refuses experiment tags still has the runs; the link just opens plainer.
        with contextlib.suppress(Exception):
            self.client.set_experiment_tag(experiment_id, record.SHARED_VIEW + VIEW_KEY, json.dumps(view))

    def link(self, experiment_id: str, run_id: str = "") -> str:
        """Where a person sees a run: the experiment's runs table in the training view (MLflow 3
        opens its GenAI view without `workflowType`), or one run's page."""
        base = "http://127.0.0.1:5000" if not self.uri.startswith("http") else self.uri.rstrip("/")
        if run_id:
            return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
        return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"

    def load_model(self, run_id: str, rebuild: Callable[[dict], torch.nn.Module] | None = None) -> torch.nn.Module:
        """The network a finished run logged, on the CPU in eval mode: rebuilt by `rebuild` from its
        `weights/spec.json` and loaded from its `weights/state.pt` (plain tensors: nothing in the
        store runs as code). A run without those files (one made before hw3 0.2, or a third-party
        model) has only MLflow's pickled model, which runs code from the store as it loads: it is
        read only when HW3_TRUST_PICKLES=1 says the store is trusted."""
        import mlflow
        import torch

        from runner import legacy

        run = self.find_run(run_id, "run")  # a clear error for an unknown run
        status, method = run.info.status, run.data.tags.get(record.METHOD, "METHOD")
        if status != "FINISHED":
            why = {
                "KILLED": f"it was interrupted and has no model yet; finish it with hw3 run {method} --resume {run_id}",
                "FAILED": "it failed before it logged a model; its error.txt says why",
                "RUNNING": "it is still training (or its process ended without saying so); wait for it to finish",
            }.get(status, "it has no model")
            raise Hw3Error(f"run {run_id} is {status}: {why}")
        if rebuild is not None:
            try:
                spec_file = self.client.download_artifacts(run_id, f"{WEIGHTS}/spec.json")
                state_file = self.client.download_artifacts(run_id, f"{WEIGHTS}/state.pt")
            except Exception:
                spec_file = state_file = ""
            if spec_file and state_file:
                try:
                    model = rebuild(json.loads(Path(spec_file).read_text()))
                    model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
                except Exception as exc:
                    raise Hw3Error(f"run {run_id}: its weights do not load ({_why(exc)})") from None
                return model.eval()
        if os.environ.get("HW3_TRUST_PICKLES") != "1":
            raise Hw3Error(
                f"run {run_id} logged only a pickled model (hw3 before 0.2, or a plugin's own model); loading it "
                "runs code from the tracking store: set HW3_TRUST_PICKLES=1 if you trust everyone who can write there"
            )
        try:
            # Models logged by hw3 0.1 name classes by modules that have since moved: runner.legacy maps them.
            model = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location="cpu", pickle_module=legacy)
        except Exception as exc:
            raise Hw3Error(f"run {run_id}: its model could not be loaded ({str(exc).splitlines()[0]})") from None
        return model.eval()


_opened: dict[tuple[str, str], Store] = {}


def reader(uri: str | None = None) -> Store:
    """The store at `uri` (MLFLOW_TRACKING_URI, or the default), opened once per process (and
    working folder: the default's path is relative)."""
    key = (uri or tracking_uri(), os.getcwd())
    if key not in _opened:
        _opened[key] = Store(key[0])
    return _opened[key]


def reap_orphans(store: Store | None = None, console: Any = None) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose process has gone (`kill -9`, a power cut):
    MLflow would show it running forever. Says so once per run: afterwards it is not RUNNING.
    Each command that starts or reports runs calls it once, before its work."""
    from runner.checkpoint import process_alive

    tracker = store or reader()

    try:
        experiments = [e.experiment_id for e in tracker.client.search_experiments()]
        runs = tracker.client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000)
    except Exception:
        return []  # a store that cannot be searched has nothing to tidy; the command's own work reports it
    reaped = []
    jobs = {r.data.tags.get(record.SLURM_JOB, "") for r in runs} - {""}
    live = live_jobs(sorted(jobs)) if jobs and shutil.which("squeue") else jobs  # no squeue here: can't tell
    for run in runs:
        tag, job = run.data.tags.get(record.PROCESS), run.data.tags.get(record.SLURM_JOB, "")
        # Its process is gone: on this host, by its PID; on a cluster's node, when its job is.
        alive = process_alive(tag) if tag else None
        if alive is False or (job and job not in live and alive is not True):
            try:
                tracker.client.set_terminated(run.info.run_id, status="KILLED")
            except Exception:
                continue
            reaped.append(run.info.run_id)
            if console is not None:
                method = run.data.tags.get(record.METHOD, "METHOD")
                gone = f"Slurm job {job}" if job and job not in live else f"its process ({tag})"
                console.print(
                    f"[yellow]run {run.info.run_id} was RUNNING but {gone} is gone: marked KILLED; "
                    f"resume it with hw3 run {method} --resume {run.info.run_id}",
                    highlight=False,
                )
    return reaped
