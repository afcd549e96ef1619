"""Checkpoints: everything needed to continue a run exactly where it stopped, as one typed
object (`TrainState`) that writes itself to and reads itself from a plain dict.

The file holds only tensors, numbers, strings and plain containers, and is read back with
`torch.load(weights_only=True)`: loading a checkpoint never runs code from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.cache import atomic_save
from runner.errors import Hw3Error

FORMAT = 1  # bump when the schema below changes incompatibly


@dataclass
class TrainState:
    """Where a run stands after a step: the method's state, the batch streams' positions, the
    random generators, the epoch and step, the epoch's running sums and the metrics so far."""

    method: dict[str, Any]
    streams: dict[str, dict[str, Any]]
    rng: dict[str, Any]
    epoch: int  # epochs completed
    step: int  # optimisation steps taken
    step_in_epoch: int  # steps of the unfinished epoch (0 at an epoch's end)
    sums: dict[str, float]
    history: list[dict[str, float]]
    resolved: dict[str, Any]  # ResolvedConfig.to_dict(): the run's config, to resume it with
    scaler: dict[str, Any] | None = None
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # shallow: no tensor copies

    @classmethod
    def from_dict(cls, raw: Any, where: Path | str = "checkpoint") -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        needed = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(raw, dict) or not needed <= set(raw):
            missing = sorted(needed - set(raw)) if isinstance(raw, dict) else ["everything"]
            raise Hw3Error(
                f"{where} is not an hw3 checkpoint (it lacks {', '.join(missing)}); start a new run instead of resuming"
            )
        if raw.get("format", FORMAT) != FORMAT:
            raise Hw3Error(
                f"{where} has checkpoint format {raw['format']}, this hw3 reads format {FORMAT}; "
                "resume it with the hw3 release that wrote it"
            )
        return cls(**{k: v for k, v in raw.items() if k in names})


def checkpoint_path(checkpoint_dir: str, run_id: str) -> Path:
    return Path(checkpoint_dir).expanduser().resolve() / run_id / "last.pt"


def save(path: Path, state: TrainState) -> None:
    atomic_save(state.to_dict(), path)


def load(path: Path) -> TrainState:
    import torch

    if not path.exists():
        raise Hw3Error(f"checkpoint {path} does not exist; it was moved or deleted, so the run cannot resume")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise Hw3Error(
            f"checkpoint {path} cannot be read ({why}): it is damaged or was not written by hw3; "
            "start a new run (or put back a good copy of the file) instead of resuming"
        ) from None
    return TrainState.from_dict(raw, path)


class RunLock:
    """An exclusive lock beside a run's checkpoint, held by the one process training the run.

    It is an OS file lock (flock), so it goes with its process, even after `kill -9`; a second
    `--resume` of a run that is still training is refused with the other process named."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "lock"
        self._handle: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open while the run trains)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            run_id = self.path.parent.name
            raise Hw3Error(
                f"run {run_id} is still training ({holder}); wait for it, or stop that process, before resuming it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {process_tag()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock
            self._handle = None


def process_tag(pid: int | None = None) -> str:
    """`PID@HOST:START`: this process (or `pid`), told apart from a later one that reuses its PID
    by its start time (Linux), for the run's tags and its lock."""
    import os
    import socket

    pid = pid or os.getpid()
    return f"{pid}@{socket.gethostname()}:{process_start(pid)}"


def process_start(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]  # starttime, in clock ticks since boot
    except (OSError, IndexError):
        return "?"


def process_alive(tag: str) -> bool | None:
    """Whether the process a `process_tag` names still runs: None when it ran on another host
    (or the tag is not one), so nothing can be said."""
    import os
    import socket

    try:
        pid_text, rest = tag.split("@", 1)
        host, start = rest.rsplit(":", 1)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return start == "?" or process_start(pid) == start
