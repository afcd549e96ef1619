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
