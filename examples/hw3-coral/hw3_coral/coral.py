"""`coral`: Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
Adaptation", ECCV 2016 workshops).

The classifier learns from source labels while a second loss pulls the second-order
statistics of the target activations towards the source's: the CORAL loss is the squared
Frobenius distance between the two covariance matrices, scaled by 1 / (4 d^2),

    loss = cross_entropy(source) + lambda * ||C_S - C_T||_F^2 / (4 d^2).

The paper aligns the last classification layer (`layer = logits`); `layer = features` aligns
the feature extractor's output instead. Subclassing `AdaptMethod` gives the runs the
evaluation, figures and logged model of hw3's built-in methods, so they compare in the UI, and
inheriting `OptimizedClassifierConfig` their network, augmentation and optimizer settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from runner import Batch, RunContext, option
from runner.adapt import AdaptMethod, OptimizedClassifierConfig


def covariance(x: torch.Tensor) -> torch.Tensor:
    """The (d, d) sample covariance of the rows of `x` (n, d), with Bessel's correction."""
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||C_S - C_T||_F^2 / (4 d^2) for source and target activations of d dimensions."""
    d = source.shape[1]
    diff = covariance(source.float()) - covariance(target.float())
    return (diff * diff).sum() / (4 * d * d)


@dataclass
class CoralConfig(OptimizedClassifierConfig):
    """arch, batch_norm, dropout, augment, optimizer (adam), lr (1e-3) and weight_decay come from
    `OptimizedClassifierConfig`; two of them are declared again with this method's defaults."""

    coral_weight: float = option(1.0, "lambda: the weight of the CORAL loss")
    layer: Literal["logits", "features"] = option("logits", "activations aligned: the last layer (paper) or features")
    augment: bool = option(False, "random affine, intensity, inversion and noise augmentation of both domains")
    weight_decay: float = option(5e-4, "L2 weight decay", ge=0)
    lr_decay: bool = option(True, "cosine decay of the learning rate to zero over the run")


class Coral(AdaptMethod[CoralConfig]):
    name = "coral"
    description = "Deep CORAL: align source and target covariances (Sun & Saenko 2016)"
    Config = CoralConfig

    def setup(self, ctx: RunContext) -> None:
        c = self.config
        self.net = self.build_net(ctx, c.arch, c.batch_norm, c.dropout)
        self.opt = self.make_optimizer(self.net.parameters())  # the config's optimizer, lr and weight_decay
        if c.lr_decay:
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=ctx.total_steps)
        self.start_augmenting(ctx)  # self.aug(x) draws from its own, checkpointed random stream

    def train_step(self, ctx: RunContext, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        xs, ys = batch["source"]
        xt, _ = batch["target"]  # no target labels: the engine passes None
        xs, xt = self.aug_each(xs, xt)  # unchanged unless augment = true
        with ctx.autocast():
            fs, ft = self.net.features(xs), self.net.features(xt)  # each domain its own batch-norm statistics
            logits_s, logits_t = self.net.head(fs), self.net.head(ft)
            cls_loss = F.cross_entropy(logits_s.float(), ys)
            aligned = (logits_s, logits_t) if c.layer == "logits" else (fs, ft)
            align_loss = coral_loss(*aligned)
            loss = cls_loss + c.coral_weight * align_loss
        ctx.optimize(loss, self.opt)
        if c.lr_decay:
            self.sched.step()
        # Tensors: hw3 reads them back once per log interval, so the step never waits for the device.
        return {
            "loss": loss.detach(),
            "loss/cls": cls_loss.detach(),
            "loss/coral": align_loss.detach(),
            "acc": (logits_s.detach().argmax(1) == ys).float().mean(),
        }
