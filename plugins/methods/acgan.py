"""`acgan`: auxiliary-classifier GAN (Odena et al. 2017) on the DCGAN networks.

G takes noise and a one-hot label; D has a real/fake head and a class head, both logits (the
softmax lives inside cross-entropy, never before it). D's class head learns from real images
(and from fakes too with `aux_fake=true`, the paper's loss; see AcganConfig); G is rewarded when
D calls its fakes real and of the intended class. The label is the dataset's class (digits) or,
with `attribute=NAME`, one binary attribute of a faces dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner import ConfigError, hookimpl, option
from runner.generate import GanConfig, GenerativeMethod

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from runner import Batch, RunContext


@dataclass
class AcganConfig(GanConfig):
    attribute: str = option("", "binary attribute to condition on, such as Smiling (empty: the dataset's label)")
    aux_weight: float = option(1.0, "weight of the auxiliary classification losses", ge=0)
    # Off by default: trained on fakes too (the paper's loss), D's class head learns whatever code G
    # uses for a class, legible to D only: 66% vs 93% label accuracy by an independent classifier
    # on embedded mnist, 20 epochs, seed 0.
    aux_fake: bool = option(False, "also train D's class head on fakes, as the paper does (default: real images only)")
    pairs: int = option(10, "noise vectors in the figure that shows one noise vector with each label", ge=1)


class Acgan(GenerativeMethod[AcganConfig]):
    name = "acgan"
    description = "auxiliary-classifier GAN conditioned on a class or a binary attribute (Odena et al. 2017)"
    Config = AcganConfig
    run_defaults = {"epochs": 30}  # label accuracy, seed 0: 85% after 20 epochs, 91% after 30
    primary_metric = "quality/label_acc"
    summary_metrics = ("quality/fd", "quality/kid", "quality/classifier_acc")
    conditional = True

    def setup(self, ctx: RunContext) -> None:
        if self.config.attribute:
            relabel(ctx, self.config.attribute)
        super().setup(ctx)

    def train_step(self, ctx: RunContext, batch: Batch) -> dict[str, float]:
        import torch
        from torch.nn.functional import cross_entropy

        real, y = batch["data"]
        n, w = len(real), self.config.aux_weight
        t_real, t_fake = self.targets(n, ctx)
        wanted = torch.randint(len(self.classes), (n,), device=ctx.device, generator=self.rng)
        with ctx.autocast():
            fake = self.G(self.noise(n, ctx), wanted)
            out_real, cls_real = self.D(real)
            out_fake, cls_fake = self.D(fake.detach())
            adv = self.bce(out_real.float(), t_real) + self.bce(out_fake.float(), t_fake)
            aux = cross_entropy(cls_real.float(), y)
            if self.config.aux_fake:
                aux = aux + cross_entropy(cls_fake.float(), wanted)
            d_loss = adv + w * aux
        ctx.optimize(d_loss, self.opt_d)
        ones = torch.ones(n, device=ctx.device)
        for k in range(self.config.g_steps):
            if k:
                wanted = torch.randint(len(self.classes), (n,), device=ctx.device, generator=self.rng)
                fake = self.G(self.noise(n, ctx), wanted)
            with ctx.autocast():
                out_g, cls_g = self.D(fake)
                g_loss = self.bce(out_g.float(), ones) + w * cross_entropy(cls_g.float(), wanted)
            ctx.optimize(g_loss, self.opt_g)
        d_x, d_g_z = torch.sigmoid(out_real.detach().float()).mean(), torch.sigmoid(out_fake.detach().float()).mean()
        aux_acc = (cls_real.detach().argmax(1) == y).float().mean()
        fake_acc = (cls_g.detach().argmax(1) == wanted).float().mean()
        values = (d_loss.detach(), g_loss.detach(), d_x, d_g_z, aux_acc, fake_acc)
        keys = ("d_loss", "g_loss", "d_x", "d_g_z", "aux_acc", "aux_fake_acc")
        return self.after_step(ctx, dict(zip(keys, values, strict=True)))

    def figures(self, ctx: RunContext) -> dict[str, Figure]:
        """Adds one noise vector drawn with each label: pairs for a binary attribute (the
        report's figure 4), a row per class for digits."""
        import torch

        from runner.figures import label_rows_figure

        figs = super().figures(ctx)
        k, n_labels = self.config.pairs, len(self.classes)
        z = torch.randn(k, self.config.nz, generator=ctx.generator("acgan/label-pairs"))
        labels = torch.arange(n_labels).repeat_interleave(k)
        images = (self.sample(z.repeat(n_labels, 1), labels) + 1) / 2
        images = images.view(n_labels, k, *images.shape[1:])
        where = ctx.domains["data"].name
        if n_labels == 2:
            title = f"acgan on {where}: each column one noise vector, without and with the attribute"
            figs["pairs.png"] = label_rows_figure(images, self.classes, title)
        else:
            title = f"acgan on {where}: each column one noise vector, each row one class"
            figs["classes.png"] = label_rows_figure(images, self.classes, title)
        return figs


def relabel(ctx: RunContext, attribute: str) -> None:
    """Make binary `attribute` the label of the run's data (train and test)."""
    from dataclasses import replace

    from runner import Split

    dom = ctx.domains["data"]
    names = dom.train.attribute_names
    if attribute not in names:
        have = f"it has {', '.join(names)}" if names else "it has no attributes (only faces datasets do)"
        raise ConfigError(f"attribute={attribute!r}: dataset '{dom.name}' has no such attribute; {have}")
    i = names.index(attribute)

    def by_attribute(s: Split) -> Split:
        return Split(s.images, s.attributes[:, i].long(), s.attributes, s.attribute_names)

    ctx.domains["data"] = replace(
        dom, train=by_attribute(dom.train), test=by_attribute(dom.test), classes=(f"not {attribute}", attribute)
    )


@hookimpl
def hw3_register_methods(register: Any) -> None:
    register(Acgan)
