"""Shared fixtures: every test runs offline, on the CPU, in its own working folder.

One dataset cache and one MLflow store serve the whole session, so the embedded datasets are
decoded once and MLflow's database is migrated once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from runner.runs.plugins import reset_manager


def pytest_configure(config: pytest.Config) -> None:
    base = Path(tempfile.mkdtemp(prefix="hw3-tests-"))
    os.environ["HW3_CACHE_DIR"] = str(base / "cache")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{base / 'mlflow.db'}"
    os.environ.pop("HW3_LOAD_PLUGINS", None)
    os.environ.pop("HW3_STRICT_PLUGINS", None)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # checkpoints/ and any stray files land here
    reset_manager()
    yield
    reset_manager()


@pytest.fixture
def client():
    from mlflow import MlflowClient

    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


# Small but real: 512 training images per domain, the whole 1,000-image test splits.
SMALL = [("train_subset", "512"), ("epochs", "2"), ("log_every", "4")]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server (tests/test_tune_postgres.py, tests/test_slurm.py): the one
    HW3_TEST_POSTGRES names, else one `.ci/postgres` starts; skipped with the reason otherwise."""
    from helpers import ci_service

    if url := os.environ.get("HW3_TEST_POSTGRES"):
        return url
    why = "no PostgreSQL: set HW3_TEST_POSTGRES=postgresql://... or run as root where .ci/postgres can start one"
    return ci_service("HW3_TEST_POSTGRES", "postgres", why)
