"""Test-only plugins and shortcuts."""

from __future__ import annotations

import os
import signal
from typing import Any

from plugins.methods.baseline import Baseline
from runner import hookimpl
from runner.runs.execute import RunRequest, RunResult, execute


def patient(seconds: float) -> float:
    """A subprocess timeout that grows with the machine's load: tests wait for a signal, and this
    is only how long before giving up. HW3_TEST_PATIENCE multiplies it further."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return seconds * max(1.0, 2 * load) * float(os.environ.get("HW3_TEST_PATIENCE", "1"))


def run_baseline(*overrides: tuple[str, Any], **kw: Any) -> RunResult:
    import io

    from rich.console import Console

    return execute(RunRequest("baseline", overrides=list(overrides), **kw), Console(file=io.StringIO()))


class NanAt(Baseline):
    """The baseline, until its loss turns NaN at global step `nan_step`."""

    name = "nan-at"
    nan_step = 20

    def train_step(self, ctx: Any, batch: Any) -> dict[str, float]:
        out = super().train_step(ctx, batch)
        if ctx.step + 1 == self.nan_step:
            out["loss"] = float("nan")
        return out


class InterruptAt(Baseline):
    """The baseline, sending itself SIGINT (as Ctrl-C does) during global step `at_step`."""

    name = "interrupt-at"
    at_step = 11

    def train_step(self, ctx: Any, batch: Any) -> dict[str, float]:
        if ctx.step + 1 == InterruptAt.at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(ctx, batch)


class Crashes(Baseline):
    name = "crashes"

    def train_step(self, ctx: Any, batch: Any) -> dict[str, float]:
        raise ValueError("shapes do not match")


class MethodsPlugin:
    def __init__(self, *classes: type) -> None:
        self.classes = classes

    @hookimpl
    def hw3_register_methods(self, register: Any) -> None:
        for cls in self.classes:
            register(cls)


class Recorder:
    """A lifecycle plugin recording what it saw; optionally Ctrl-C after one epoch."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.interrupt_after = interrupt_after

    @hookimpl
    def hw3_run_start(self, run: Any) -> None:
        self.calls.append(("start", run.run_id))

    @hookimpl
    def hw3_epoch_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("epoch", epoch))
        if epoch == self.interrupt_after:
            os.kill(os.getpid(), signal.SIGINT)

    @hookimpl
    def hw3_run_end(self, run: Any, status: str, metrics: dict[str, float]) -> None:
        self.calls.append(("end", status))


def ci_service(env: str, script: str, why: str) -> str:
    """A real service a test needs: the one `env` names, else one `.ci/<script>` starts (as root,
    from Debian's packages), whose printed address `env` then holds. Without either the test is
    skipped with `why`, except under CI, where that is a failure."""
    import subprocess
    from pathlib import Path

    import pytest

    if os.geteuid() == 0:
        ci = Path(__file__).resolve().parents[1] / ".ci" / script
        made = subprocess.run(["bash", str(ci)], capture_output=True, text=True, timeout=600)
        if made.returncode == 0 and made.stdout.strip():
            os.environ[env] = made.stdout.strip()
            return os.environ[env]
        why += f" (.ci/{script}: {made.stderr.strip()[-300:]})"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)
