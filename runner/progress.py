"""Progress for a run: a rich bar with live losses on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def fmt_metrics(metrics: dict[str, float], skip_nested: bool = True) -> str:
    """`loss 0.123  target_acc 91.2%`: accuracies as percentages, per-class keys left out. Training
    figures drop their `train/` prefix unless an evaluation figure has the same name (a DANN's
    `domain_acc` on its training batches and on the test sets): then it stays."""
    parts = []
    for key, value in metrics.items():
        bare = key.removeprefix("train/")
        if skip_nested and "/" in bare:
            continue
        name = key if bare != key and bare in metrics else bare
        parts.append(f"{name} {value:.1%}" if name.endswith("acc") else f"{name} {value:.4g}")
    return "  ".join(parts)


def fmt_value(key: str, value: float | None) -> str:
    """One metric for a table: accuracies as percentages, numbers from 1 up to two decimals, smaller
    ones to four significant digits."""
    if value is None:
        return "-"
    if key.endswith("acc"):
        return f"{value:.2%}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


class Reporter:
    PLAIN_EVERY_S = 30.0

    def __init__(self, console: Console, epochs: int, steps_per_epoch: int, done_steps: int) -> None:
        self.console, self.epochs, self.spe = console, epochs, steps_per_epoch
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.done = done_steps
        self.last_plain = time.monotonic()
        self.epoch_t0 = time.monotonic()

    def __enter__(self) -> Reporter:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
                console=self.console,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(
                "train",
                total=self.epochs * self.spe,
                completed=self.done,
                epoch=self._epoch_label(self.done),
                losses="",
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def _epoch_label(self, step: int) -> str:
        return f"{min(step // self.spe + 1, self.epochs)}/{self.epochs}"

    def wants(self, global_step: int) -> bool:
        """Whether `step` would show anything now (so the loop can skip building its figures)."""
        if self.progress is not None:
            return global_step % 5 == 0 or global_step % self.spe == 0
        return time.monotonic() - self.last_plain > self.PLAIN_EVERY_S

    def step(self, global_step: int, losses: dict[str, float]) -> None:
        if self.progress is not None:
            if self.wants(global_step):
                self.progress.update(
                    self.task,
                    completed=global_step,
                    epoch=self._epoch_label(global_step - 1),
                    losses=fmt_metrics(losses),
                )
        elif time.monotonic() - self.last_plain > self.PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            within = (global_step - 1) % self.spe + 1
            self.console.print(
                f"epoch {self._epoch_label(global_step - 1)}  step {within}/{self.spe}  {fmt_metrics(losses)}",
                highlight=False,
            )

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        took = time.monotonic() - self.epoch_t0
        self.epoch_t0 = self.last_plain = time.monotonic()
        self.console.print(f"epoch {epoch}/{self.epochs}  {fmt_metrics(metrics)}  ({took:.1f} s)", highlight=False)
