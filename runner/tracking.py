"""Writing one MLflow run: `Tracker` opens it (or reopens the one resumed), logs its params,
tags, step metrics, tables, figures and model, and ends it FINISHED, FAILED or KILLED. Reading
is `runner.store`'s job; a Tracker writes through the process's one `Store`.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import record
from runner.sinks import ending, plain
from runner.store import WEIGHTS, Store, reader
from runner.version import __version__

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure


@dataclass
class RunHandle:
    """An open run: its ID, its experiment, and the status it ends with when its block ends
    without an exception (FINISHED unless set)."""

    run_id: str
    experiment_id: str
    tracker: Any = None
    status: str = "FINISHED"

    @property
    def experiment(self) -> str:
        return self.tracker.store.experiment_name(self.experiment_id) if self.tracker else ""


class Tracker:
    """The writer of one run at a time; once a run is started or reopened it is the engine's
    `Sink` for that run."""

    def __init__(self, store: Store | str | None = None) -> None:
        self.store = store if isinstance(store, Store) else reader(store)
        self.uri, self.client = self.store.uri, self.store.client
        self.run_id = ""
        self.experiment = ""  # the experiment ID of the run started last
        self.model_id = ""

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.store._call(fn, *args, **kwargs)

    def start(self, experiment: str, run_name: str | None, tags: dict[str, str]) -> str:
        exp_id = self.store.experiment_id(experiment)
        run = self._call(self.client.create_run, exp_id, run_name=run_name, tags={**record.origin_tags(), **tags})
        self.run_id, self.experiment = run.info.run_id, exp_id
        self.model_id = ""
        return self.run_id

    def reopen(self, run_id: str) -> None:
        self.run_id = run_id
        self.model_id = ""
        self._call(self.client.update_run, run_id, status="RUNNING")

    @contextlib.contextmanager
    def open(
        self,
        experiment: str,
        run_name: str,
        rec: record.RunRecord | record.ParentRecord,
        *,
        params: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        resume: str = "",
        columns: tuple[str, ...] = (),
    ) -> Iterator[RunHandle]:
        """The one place a run begins and ends: start it (tags, params, config.json) or reopen the
        one being resumed, and end it on the way out: FINISHED, KILLED after Ctrl-C or SIGTERM,
        FAILED for anything else raised inside the block (or what `handle.status` was set to).
        `columns`: the metrics the experiment's runs table shows first (its shared view)."""
        if resume:
            self.reopen(resume)
        else:
            self.start(experiment, run_name, rec.tags())
        handle = RunHandle(self.run_id, "", self)
        with ending(self, handle):  # from here on, whatever happens ends the run
            if resume and isinstance(rec, record.RunRecord):
                self.set_tags(rec.changing_tags())
            if not resume and params:
                self.log_params(params)
            if not resume and config is not None:
                self.log_dict(config, "config.json")
            handle.experiment_id = self.store.experiment_of(resume) if resume else self.experiment
            if columns:
                self.store.share_view(handle.experiment_id, columns)
            yield handle

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._call(self.client.log_batch, self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._call(self.client.log_batch, self.run_id, tags=items)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Metrics at `step`, rounded to what a person reads; once the run has logged its model,
        linked to it (the model's page in the UI lists them)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        model = getattr(self, "model_id", "") or None
        items = [Metric(k, plain(v), now, step, model_id=model) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self._call(self.client.log_batch, self.run_id, metrics=items[i : i + 1000])

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        self._call(self.client.log_text, self.run_id, json.dumps(data, indent=2, default=str), path)

    def log_text(self, text: str, path: str) -> None:
        self._call(self.client.log_text, self.run_id, text, path)

    def log_table(self, table: dict[str, Any], path: str) -> None:
        """A table ({"columns": [...], "data": [[...], ...]}) the UI shows as one. MLflow appends to
        a table already logged under `path`, and a method's tables hold every epoch so far, so a
        resumed run that logged it before adds only the rows it does not hold yet."""
        import pandas as pd

        rows = [[plain(v) if isinstance(v, float) else v for v in row] for row in table["data"]]
        folder = path.rpartition("/")[0] or None
        if any(a.path == path for a in self._call(self.client.list_artifacts, self.run_id, folder)):
            with tempfile.TemporaryDirectory() as tmp:
                done = json.loads(self.store.artifact(self.run_id, path, tmp).read_text()).get("data", [])
            logged = {json.dumps(row) for row in done}
            rows = [row for row in rows if json.dumps(row) not in logged]
        if rows:
            self._call(self.client.log_table, self.run_id, pd.DataFrame(rows, columns=table["columns"]), path)

    def log_bytes(self, data: bytes, path: str) -> None:
        """A file of `data` at `path` among the run's artifacts, replacing one logged there before."""
        folder, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self._call(self.client.log_artifact, self.run_id, str(local), folder or None)

    def log_figure(self, fig: Figure, path: str) -> None:
        from runner.sinks import close_figure

        self._call(self.client.log_figure, self.run_id, fig, path)
        close_figure(fig)

    def log_image(self, image: Any, key: str, step: int) -> None:
        """One picture of a step-indexed series (the MLflow UI shows it with a step slider)."""
        self._call(self.client.log_image, self.run_id, image, key=key, step=step)

    def log_model(self, model: torch.nn.Module, example: torch.Tensor, step: int = 0) -> None:
        """The trained network as an MLflow PyTorch model (`runs:/<id>/model`) that loads back,
        at `step` (the epoch: a resumed run's models tell apart); metrics logged after it link to it."""
        import mlflow
        import torch

        model = _plain_copy(model)
        spec = getattr(model, "hw3_spec", None)
        if spec:  # what hw3's own commands load: plain weights, read without running code
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(tmp) / "state.pt")
                (Path(tmp) / "spec.json").write_text(json.dumps(spec, indent=2))
                self._call(self.client.log_artifacts, self.run_id, tmp, WEIGHTS)
        buf = io.StringIO()  # mlflow prints signature warnings; keep the terminal clean
        # Redirect outside the run: ending it prints a "View run" link for a server, and end() prints one too.
        with _redirect(buf), mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                model.cpu().eval(),  # a copy: the run's own network stays where it is, in its mode
                name="model",
                input_example=example.cpu().numpy(),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"hw3=={__version__}"],
                # Pickled, so it loads back as the real module class with any batch size;
                # torch.export's pt2 takes ten times longer and fixes the example's shapes.
                serialization_format="pickle",
                step=step,
                tags={"epochs": str(step)},
            )
        self.model_id = getattr(info, "model_id", "") or ""
        # Leaving mlflow.start_run marked the run FINISHED; it is not over until its owner ends it.
        self._call(self.client.update_run, self.run_id, status="RUNNING")

    def end(self, status: str) -> None:
        self._call(self.client.set_terminated, self.run_id, status=status)


def _plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` without compiled forwards (compile=true), which do not pickle."""
    import copy

    compiled = {m: m._compiled_call_impl for m in model.modules() if getattr(m, "_compiled_call_impl", None)}
    for m in compiled:
        m._compiled_call_impl = None
    try:
        return copy.deepcopy(model)
    finally:
        for m, impl in compiled.items():
            m._compiled_call_impl = impl


class _redirect:
    def __init__(self, buf: io.StringIO) -> None:
        import contextlib

        self._cms = [contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf)]

    def __enter__(self) -> None:
        for cm in self._cms:
            cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        for cm in reversed(self._cms):
            cm.__exit__(*exc)
