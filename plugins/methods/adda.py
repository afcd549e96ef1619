"""`adda`: adversarial discriminative domain adaptation (Tzeng et al., CVPR 2017).

Two stages. First a source encoder and classifier learn from source labels (or come from a
finished `baseline` run, `--set source_run=RUN_ID`). Then a target encoder, initialised from
the source one, learns against a discriminator to map target images where source features
lie, with the GAN's inverted-label loss, while the source encoder and classifier stay frozen.
Target images are classified by the target encoder and the source classifier.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from plugins.methods.common import AdaptMethod
from runner import hookimpl, option
from runner.errors import Hw3Error


@dataclass
class AddaConfig:
    arch: Literal["auto", "mnist", "svhn"] = option("auto", "DANN paper network; auto: mnist below 32 px, svhn from 32")
    batch_norm: bool = option(True, "batch norm in the encoders and classifier")
    pretrain_epochs: int = option(
        -1, "epochs of source training before adaptation (-1: a quarter of the run, at least 1; not with source_run)"
    )
    source_run: str = option("", "a finished baseline run (MLflow run ID) whose model is the source network")
    lr_source: float = option(1e-3, "Adam learning rate of source pretraining")
    lr_target: float = option(2e-4, "Adam learning rate of the target encoder (the paper's 0.0002)")
    lr_disc: float = option(2e-4, "Adam learning rate of the discriminator")
    disc_hidden: int = option(500, "width of the discriminator's two hidden layers (the paper's 500)")
    augment: bool = option(False, "random affine, intensity and inversion augmentation of both domains' images")


class Composed(nn.Module):
    """A feature extractor and a label head from different networks, as one classifier."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: Any) -> Any:
        return self.head(self.features(x))


class Adda(AdaptMethod):
    name = "adda"
    description = "adversarial discriminative domain adaptation (Tzeng et al. 2017)"
    Config = AddaConfig

    def setup(self, ctx: Any) -> None:
        import torch

        c = self.config
        self.pretrain_epochs = c.pretrain_epochs if c.pretrain_epochs >= 0 else max(1, ctx.settings.epochs // 4)
        if self.pretrain_epochs >= ctx.settings.epochs and not c.source_run:
            raise Hw3Error(
                f"adda: pretrain_epochs={self.pretrain_epochs} leaves no epoch of adaptation out of "
                f"epochs={ctx.settings.epochs}; raise --epochs (2 at least) or lower pretrain_epochs"
            )
        self.net = self.build_net(ctx, c.arch, c.batch_norm)  # source encoder + classifier
        if c.source_run:
            self.net.load_state_dict(_baseline_weights(c.source_run))
        self.target = copy.deepcopy(self.net.features)
        d = c.disc_hidden
        self.discriminator = ctx.prepare(
            nn.Sequential(nn.Linear(self.net.feature_dim, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
        )
        betas = (0.5, 0.999)
        self.opt_source = torch.optim.Adam(self.net.parameters(), lr=c.lr_source)
        self.opt_target = torch.optim.Adam(self.target.parameters(), lr=c.lr_target, betas=betas)
        self.opt_disc = torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_disc, betas=betas)
        self.adapting = bool(c.source_run)
        self.start_augmenting(ctx)

    def classifier(self) -> nn.Module:
        return Composed(self.target, self.net.head) if self.adapting else self.net

    def encoder(self, role: str) -> nn.Module:
        return self.target if role == "target" and self.adapting else self.net.features

    def train_step(self, ctx: Any, batch: Any) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        xs, ys = batch["source"]
        xt, _ = batch["target"]
        xs, xt = self.aug(xs), self.aug(xt)
        if not self.adapting and ctx.epoch < self.pretrain_epochs:
            with ctx.autocast():
                logits = self.net(xs)
                loss = F.cross_entropy(logits.float(), ys)
            ctx.optimize(loss, self.opt_source)
            acc = (logits.detach().argmax(1) == ys).float().mean()
            loss_value, acc_value = torch.stack([loss.detach(), acc]).tolist()
            return {"loss/source": loss_value, "acc": acc_value}
        if not self.adapting:  # the first adaptation step: start the target encoder from the source one
            self.target.load_state_dict(self.net.features.state_dict())
            self.adapting = True
        self.net.eval()  # frozen: its batch-norm statistics stay those of the source
        with torch.no_grad(), ctx.autocast():
            fs = self.net.features(xs)
        with ctx.autocast():
            ft = self.target(xt)
            d = self.discriminator(torch.cat([fs, ft.detach()])).flatten().float()
            truth = torch.cat([torch.ones(len(xs)), torch.zeros(len(xt))]).to(d.device)
            d_loss = F.binary_cross_entropy_with_logits(d, truth)
        ctx.optimize(d_loss, self.opt_disc)
        with ctx.autocast():
            g = self.discriminator(ft).flatten().float()
            g_loss = F.binary_cross_entropy_with_logits(g, torch.ones_like(g))  # inverted labels
        ctx.optimize(g_loss, self.opt_target)
        self.discriminator.zero_grad(set_to_none=True)
        d_acc = ((d >= 0).float() == truth).float().mean()
        d_value, g_value, acc_value = torch.stack([d_loss.detach(), g_loss.detach(), d_acc]).tolist()
        return {"loss/disc": d_value, "loss/target": g_value, "domain_acc": acc_value}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "adapting": self.adapting}  # AdaptMethod adds the augmentation state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.adapting = state.pop("adapting")
        super().load_state_dict(state)


def _baseline_weights(run_id: str) -> dict[str, Any]:
    """The classifier weights of a finished baseline run's logged model."""
    import mlflow

    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location="cpu")
    except Exception as exc:
        raise Hw3Error(
            f"adda: source_run={run_id}: no logged model could be loaded ({str(exc).splitlines()[0]}); "
            "give the ID of a finished baseline run on the same pair"
        ) from None
    net = getattr(model, "net", None)
    if net is None or not hasattr(net, "features"):
        raise Hw3Error(f"adda: source_run={run_id} is not a baseline classifier run")
    return net.state_dict()


@hookimpl
def hw3_register_methods(register: Any) -> None:
    register(Adda)
