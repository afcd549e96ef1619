"""Where a run's outputs go. The engine writes through `Sink`; the MLflow `Tracker` is one, an
in-memory `MemorySink` serves tests and embedding, `NullSink` the processes other than rank 0.
The engine never ends a run: whoever opened it does (`ending`, below)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from runner import record
from runner.errors import RunInterrupted

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure


class Sink(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_image(self, image: Any, key: str, step: int) -> None: ...

    def log_figure(self, fig: Figure, path: str) -> None: ...

    def log_text(self, text: str, path: str) -> None: ...

    def log_table(self, table: dict[str, Any], path: str) -> None: ...

    def log_bytes(self, data: bytes, path: str) -> None: ...

    def log_model(self, model: torch.nn.Module, example: torch.Tensor, step: int = 0) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def end(self, status: str) -> None: ...


def close_figure(fig: Figure) -> None:
    """Free a figure pyplot made (a plugin's figures may come from it); hw3's own never touch pyplot."""
    import sys

    if (pyplot := sys.modules.get("matplotlib.pyplot")) is not None:
        pyplot.close(fig)


def plain(value: float) -> float:
    """A logged number as a person reads it: 0.919, not float32's 0.9190000295639038."""
    value = float(value)
    return float(f"{value:.7g}") if math.isfinite(value) else value


class NullSink:
    """Writes nothing: the sink of every process but rank 0, which logs for the group."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_image(self, image: Any, key: str, step: int) -> None:
        pass

    def log_figure(self, fig: Figure, path: str) -> None:
        close_figure(fig)

    def log_text(self, text: str, path: str) -> None:
        pass

    def log_table(self, table: dict[str, Any], path: str) -> None:
        pass

    def log_bytes(self, data: bytes, path: str) -> None:
        pass

    def log_model(self, model: torch.nn.Module, example: torch.Tensor, step: int = 0) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def end(self, status: str) -> None:
        pass


@dataclass
class MemorySink:
    """Keeps everything in memory: metrics by key as (step, value) lists, figure and artifact
    paths, texts, images, tags, the model and the final status."""

    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    images: dict[str, list[int]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    model: Any = None
    status: str = "RUNNING"

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((step, float(value)))

    def log_image(self, image: Any, key: str, step: int) -> None:
        self.images.setdefault(key, []).append(step)

    def log_figure(self, fig: Figure, path: str) -> None:
        self.figures.append(path)
        close_figure(fig)

    def log_text(self, text: str, path: str) -> None:
        self.texts[path] = text

    def log_table(self, table: dict[str, Any], path: str) -> None:
        self.tables[path] = table

    def log_bytes(self, data: bytes, path: str) -> None:
        self.files[path] = data

    def log_model(self, model: torch.nn.Module, example: torch.Tensor, step: int = 0) -> None:
        self.model = model

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def end(self, status: str) -> None:
        self.status = status

    def last(self, key: str) -> float:
        """The last value logged for metric `key`."""
        return self.metrics[key][-1][1]


@contextlib.contextmanager
def ending(sink: Any, handle: Any = None) -> Iterator[None]:
    """End the run `sink` writes to when the block ends: KILLED after Ctrl-C or SIGTERM (a
    checkpoint was saved), FAILED when anything else is raised, else `handle.status` (FINISHED).
    The one place a run's final status is decided, for MLflow and the in-memory sinks alike."""
    try:
        yield
    except (RunInterrupted, KeyboardInterrupt):
        sink.end("KILLED")
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the store may be the failure; the status still goes
            sink.set_tags({record.ERROR: (str(exc).strip().splitlines() or [type(exc).__name__])[0][:5000]})
        sink.end("FAILED")
        raise
    sink.end(getattr(handle, "status", "FINISHED"))
