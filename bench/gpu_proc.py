"""The GPU check's processes and its hard end: `run_cli` runs a command in a process group of its
own, streams its lines and stops it at its time limit; `Watchdog` ends the whole check at its
deadline wherever it is (every process group killed, the table printed, os._exit); `time_limit`
limits a stage that runs in this process; `write_json` / `read_json` pass figures between
processes without ever reading a half-written file.

This module imports no other part of the check (bench/gpu_check.py and the rest import it).
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE = 20.0  # a stopped process's overrun: Ctrl-C, SIGKILL 10 s later, 5 s to reap, 5 s for its last lines
EXIT_DEADLINE = 3  # the exit status when the watchdog ends the check

STOPPING = threading.Event()  # set by the watchdog: from then on the main thread is parked
_LIVE: set[subprocess.Popen] = set()  # the process groups run_cli has running
_LOCK = threading.Lock()


def park_if_stopping() -> None:
    """In the main thread once the watchdog has fired: wait there for its os._exit, so nothing
    the main thread would do next (print, start a stage) mixes with the watchdog's table."""
    if STOPPING.is_set() and threading.current_thread() is threading.main_thread():
        threading.Event().wait()


def say(text: str) -> None:
    park_if_stopping()
    print(f"   {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# Subprocesses


@dataclass
class Proc:
    rc: int
    wall: float
    tail: list[str]
    timed_out: bool


def run_cli(
    args: list[str], timeout: float, env: dict[str, str] | None = None, show: bool = True, grace: float = 10.0
) -> Proc:
    """Run `args` in a session of its own; its lines printed as they come (indented) when `show`;
    at `timeout` it gets Ctrl-C (hw3 ends its runs cleanly), `grace` s later SIGKILL; so this
    returns at most `timeout + grace + 10` s after it started. The watchdog kills it at the deadline."""
    full_env = {**os.environ, "COLUMNS": "160", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    park_if_stopping()
    with _LOCK:
        p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, start_new_session=True
        )
        _LIVE.add(p)
    tail: collections.deque[str] = collections.deque(maxlen=60)

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            tail.append(line.rstrip())
            if show and not STOPPING.is_set():
                print(f"   | {line.rstrip()}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        p.wait(max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        say(f"stopping it at its {timeout:.0f} s limit")
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    except BaseException:  # Ctrl-C here, or a stage's own limit: its processes go too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        raise
    finally:
        with _LOCK:
            _LIVE.discard(p)
    park_if_stopping()  # killed by the watchdog: nothing more from here
    wall = time.perf_counter() - t0
    reader.join(5)  # a grandchild outside its group may hold the pipe: not waited for longer
    return Proc(p.returncode if p.returncode is not None else -9, wall, list(tail), timed_out)


def kill_all() -> None:
    """SIGKILL every process group run_cli has running, and this process's multiprocessing children."""
    import multiprocessing

    with _LOCK:
        live = list(_LIVE)
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        for child in multiprocessing.active_children():
            child.kill()


# ---------------------------------------------------------------------------------------------
# Time limits


class StageTimeout(Exception):
    """A stage in this process ran past its limit (raised in the main thread by SIGALRM)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StageTimeout in the main thread `seconds` from now unless the block has ended; it
    interrupts Python code and waits, not a C call that never returns (the watchdog covers those)."""

    def expire(signum: int, frame: Any) -> None:
        raise StageTimeout(f"stopped at its {seconds:.0f} s limit")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Watchdog:
    """The check's hard end. At `deadline` seconds after `start` (time.monotonic), whatever the
    main thread is doing, it kills every process group run_cli has running, calls `last_words`
    (the table with what was measured so far), and ends this process with os._exit(EXIT_DEADLINE).
    Should the main thread hold the interpreter so that this thread cannot run, faulthandler
    dumps every thread's stack and ends the process `backstop` s later."""

    def __init__(self, deadline: float, last_words: Callable[[], None], start: float, backstop: float = 30.0):
        self.deadline, self.last_words = deadline, last_words
        self.delay = max(0.0, deadline - (time.monotonic() - start))
        self.backstop = backstop
        self._timer = threading.Timer(self.delay, self._fire)
        self._timer.daemon = True
        self._disarmed = False

    def arm(self) -> Watchdog:
        self._timer.start()
        faulthandler.dump_traceback_later(self.delay + self.backstop, exit=True)
        return self

    def disarm(self) -> None:
        """Cancel it (the check ended in time); if it has fired already, wait here for its end."""
        with _LOCK:
            self._disarmed = not STOPPING.is_set()
        park_if_stopping()
        self._timer.cancel()
        faulthandler.cancel_dump_traceback_later()

    def _fire(self) -> None:
        with _LOCK:
            if self._disarmed:
                return
            STOPPING.set()  # from here the main thread parks at its next print or process
        try:
            print(f"\n!! the check's {self.deadline:.0f} s deadline: its processes stopped", flush=True)
            kill_all()
            self.last_words()
        except BaseException:
            traceback.print_exc(file=sys.stdout)
        finally:
            sys.stdout.flush()
            os._exit(EXIT_DEADLINE)


# ---------------------------------------------------------------------------------------------
# Figures passed between processes


def write_json(path: Path, data: Any) -> None:
    """Write `data` to `path` whole or not at all (a stop mid-write leaves the file before it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    """`path`'s figures, or `default` when there are none or they cannot be read (said why)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        say(f"could not read {path.name}: {type(exc).__name__}: {exc}")
        return default
