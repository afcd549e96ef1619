"""`baseline`: the DANN paper's digit classifier trained on one domain or both, no adaptation.

`train_on = source` is the lower bound adaptation methods must beat, `target` (with target
labels) the upper bound, `both` the two domains' labels pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from runner import ReportRow, hookimpl, option
from runner.adapt import AdaptMethod


@dataclass
class BaselineConfig:
    train_on: Literal["source", "target", "both"] = option("source", "domain(s) whose labels train the classifier")
    arch: Literal["auto", "mnist", "svhn", "lenet"] = option(
        "auto", "network: the DANN paper's (auto: mnist below 32 px, svhn from 32), or ADDA's lenet"
    )
    batch_norm: bool = option(True, "batch norm after each layer (false: the paper's exact layers)")
    dropout: float = option(
        0.0, "dropout of whole channels after the last convolution, while training (0: none)", ge=0, lt=1
    )
    optimizer: Literal["adam", "sgd"] = option("adam", "adam, or sgd with momentum 0.9")
    lr: float = option(1e-3, "learning rate", gt=0)
    weight_decay: float = option(5e-4, "L2 weight decay", ge=0)
    lr_decay: bool = option(True, "cosine decay of the learning rate to zero over the run")
    augment: bool = option(
        True, "random affine, intensity and inversion augmentation of the training images (false: as the paper)"
    )


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

    def setup(self, ctx: Any) -> None:
        import torch
        from torch import nn

        c = self.config
        self.net = self.build_net(ctx, c.arch, c.batch_norm, c.dropout)  # stays in train mode; evaluate() restores it
        if c.optimizer == "adam":
            self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        else:
            self.opt = torch.optim.SGD(self.net.parameters(), lr=c.lr, momentum=0.9, weight_decay=c.weight_decay)
        if c.lr_decay:
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=ctx.total_steps)
        self.loss = nn.CrossEntropyLoss()
        self.start_augmenting(ctx)

    def train_step(self, ctx: Any, batch: Any) -> dict[str, float]:
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
        correct = (logits.detach().argmax(1) == y).sum()
        loss_value, correct_value = torch.stack([loss.detach(), correct.float()]).tolist()  # one host sync
        return {"loss": loss_value, "acc": correct_value / len(y)}


@hookimpl
def hw3_register_methods(register: Any) -> None:
    register(Baseline)
