"""`baseline`: the DANN paper's digit classifier trained on one domain or both, no adaptation.

`train_on = source` is the lower bound adaptation methods must beat, `target` (with target
labels) the upper bound, `both` the two domains' labels pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from runner import ReportRow, hookimpl, option
from runner.adapt import AdaptMethod, OptimizedClassifierConfig

if TYPE_CHECKING:
    from runner import Batch, RunContext


@dataclass
class BaselineConfig(OptimizedClassifierConfig):
    train_on: Literal["source", "target", "both"] = option("source", "domain(s) whose labels train the classifier")
    weight_decay: float = option(5e-4, "L2 weight decay", ge=0)
    lr_decay: bool = option(True, "cosine decay of the learning rate to zero over the run")


class Baseline(AdaptMethod[BaselineConfig]):
    name = "baseline"
    description = "source-only / target-only / pooled classifier: the bounds for adaptation"
    Config = BaselineConfig
    run_defaults = {"epochs": 10}

    def train_domains(self) -> dict[str, bool]:
        roles = ("source", "target") if self.config.train_on == "both" else (self.config.train_on,)
        return dict.fromkeys(roles, True)

    def report_row(self) -> ReportRow | None:
        """Source only is the lower bound of the report's table, target only its upper bound;
        the pooled classifier is neither, and stays out of it."""
        return {
            "source": ReportRow("source only", place=0),
            "target": ReportRow("target only", place=2),
        }.get(self.config.train_on)

    def setup(self, ctx: RunContext) -> None:
        import torch
        from torch import nn

        c = self.config
        self.net = self.build_net(ctx, c.arch, c.batch_norm, c.dropout)  # stays in train mode; evaluate() restores it
        self.opt = self.make_optimizer(self.net.parameters())
        if c.lr_decay:
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=ctx.total_steps)
        self.loss = nn.CrossEntropyLoss()
        self.start_augmenting(ctx)

    def train_step(self, ctx: RunContext, batch: Batch) -> dict[str, float]:
        import torch

        parts = list(batch.values())
        if len(parts) == 1:
            x, y = parts[0].x, parts[0].y
        else:
            x, y = torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts])
        x = self.aug(x)
        with ctx.autocast():
            logits = self.net(x)
            loss = self.loss(logits.float(), y)
        ctx.optimize(loss, self.opt)
        if self.config.lr_decay:
            self.sched.step()
        # Tensors: the engine reads them back once per log interval, so the step never waits.
        return {"loss": loss.detach(), "acc": (logits.detach().argmax(1) == y).float().mean()}


@hookimpl
def hw3_register_methods(register: Any) -> None:
    register(Baseline)
