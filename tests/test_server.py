"""A shared MLflow tracking server: a run lands on it whole, and one that is down is a clear error.

The first test starts a real `mlflow server` (SQLite backend, artifacts proxied through the
server) on a free loopback port; it takes ~15 s of the test's time on two cores.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_baseline
from typer.testing import CliRunner

from runner.errors import Hw3Error
from runner.store import check_reachable

TINY = [("epochs", "1"), ("train_subset", "256"), ("test_subset", "300"), ("tsne_points", "0"), ("log_every", "4")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: starts faster, fewer processes
    log = open(base / "server.log", "wb")  # noqa: SIM115 (closed in the finally below)
    # A session of its own, so the finally below ends the server and its uvicorn worker together.
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}"),
            *("--artifacts-destination", str(base / "artifacts"), "--serve-artifacts"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in 90 s:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.25)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def restore_mlflow_uri() -> Iterator[None]:
    import mlflow

    before = mlflow.get_tracking_uri()  # Tracker sets MLflow's process-wide URI; later tests expect theirs
    yield
    mlflow.set_tracking_uri(before)


def test_a_run_lands_on_the_tracking_server(
    mlflow_server: str,
    restore_mlflow_uri: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mlflow
    import torch
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = run_baseline(*TINY)
    assert result.tracking_uri == mlflow_server
    # MLflow prints a link to the run when it ends; once (Tracker.end), not again for the model.
    assert capsys.readouterr().out.count("View run") <= 1

    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server, not a local path
    assert run.data.metrics["target_acc"] == pytest.approx(result.metrics["target_acc"])
    assert run.data.params["train_subset"] == "256"

    top = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.json", "figures"} <= top  # MLflow 3 keeps the model as a logged model, not here
    assert "figures/curves.png" in {a.path for a in client.list_artifacts(result.run_id, "figures")}
    config = json.loads(Path(client.download_artifacts(result.run_id, "config.json", str(tmp_path))).read_text())
    assert config["method"] == "baseline" and config["config"]["epochs"] == 1
    png = Path(client.download_artifacts(result.run_id, "figures/curves.png", str(tmp_path))).read_bytes()
    assert png.startswith(b"\x89PNG")

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 28, 28))  # mnist:mnistm: 3 channels (mnistm's), 28 px (mnist's)
    assert logits.shape == (2, 10)


def test_an_unreachable_server_is_one_line_before_training(
    monkeypatch: pytest.MonkeyPatch, restore_mlflow_uri: None, tmp_path: Path
) -> None:
    from runner.commands.cli import app

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["run", "baseline", *(f"--set={k}={v}" for k, v in TINY)])
    elapsed = time.monotonic() - t0
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = " ".join(result.stderr.split())
    assert f"cannot reach the MLflow tracking server {uri} (connection refused)" in line
    assert f"mlflow server --host 127.0.0.1 --port {uri.rsplit(':', 1)[1]}" in line
    assert "unset MLFLOW_TRACKING_URI" in line and "sqlite:///mlflow.db" in line
    assert "Traceback" not in result.output
    assert elapsed < 10, elapsed
    assert not (tmp_path / "checkpoints").exists()  # no run started


def test_a_server_that_accepts_but_never_answers_times_out_quickly() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts connections; nobody ever replies
        uri = f"http://user:secret@127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(Hw3Error, match="timed out") as info:
            check_reachable(uri, timeout=0.5)
        assert time.monotonic() - t0 < 5
        assert "secret" not in str(info.value)


def test_a_server_that_answers_with_an_error_counts_as_reachable() -> None:
    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_address[1]}")  # MLflow takes it from there
    finally:
        server.shutdown()
        server.server_close()


def test_local_stores_are_not_probed() -> None:
    check_reachable("sqlite:///nowhere/mlflow.db")
    check_reachable("file:///nowhere/mlruns")
