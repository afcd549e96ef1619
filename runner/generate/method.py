"""`GenerativeMethod`: what GAN and ACGAN share, settings, optimizers, EMA, sample grids, curves
and quality metrics.

Subclasses say only what one adversarial step does (`train_step`) and what a conditional model
adds to the figures.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from runner.method import Method
from runner.seeding import restore_generator
from runner.settings import option

if TYPE_CHECKING:
    from runner.context import RunContext

C = TypeVar("C", bound="GanConfig")


@dataclass
class GanConfig:
    nz: int = option(100, "length of the noise vector z", ge=1)
    ngf: int = option(64, "generator width (channels at the last hidden layer)", ge=1)
    ndf: int = option(64, "discriminator width (channels at the first layer)", ge=1)
    lr: float = option(2e-4, "Adam learning rate of both networks", gt=0)
    beta1: float = option(0.5, "Adam beta1", ge=0, lt=1)
    beta2: float = option(0.999, "Adam beta2", ge=0, lt=1)
    g_steps: int = option(1, "generator updates per discriminator update (the report's 'two batches': 2)", ge=1)
    real_label: float = option(1.0, "discriminator target for real images (0.9: one-sided label smoothing)", gt=0, le=1)
    flip: float = option(0.0, "probability of swapping real and fake targets in a discriminator step", ge=0, le=1)
    lr_decay: bool = option(False, "decay both learning rates linearly to zero over the second half of the run")
    ema: float = option(
        0.0, "decay of an exponential moving average of G used for samples and metrics (0: off)", ge=0, lt=1
    )
    grid: int = option(64, "fixed-noise samples in the per-epoch grid logged as an image series", ge=1)
    quality_samples: int = option(5000, "generated images for the final Fréchet distance and KID (0: skip)", ge=0)
    inception_weights: str = option("", "torchvision Inception v3 weights file for Inception FID (never downloaded)")


class GenerativeMethod(Method[C]):
    """A generator/discriminator pair trained on the run's one dataset (`ctx.domains["data"]`)."""

    kind = "generate"
    Config = GanConfig
    primary_metric = "quality/fd"
    summary_metrics: ClassVar[tuple[str, ...]] = ("quality/kid", "quality/classifier_acc")
    report_figures: ClassVar[tuple[str, ...] | None] = ("samples.png", "classes.png", "pairs.png", "losses.png")
    report_metrics: ClassVar[dict[str, str]] = {
        "quality/fd": "Fréchet distance",
        "quality/kid": "KID",
        "quality/label_acc": "label accuracy",
        "quality/classifier_acc": "feature classifier accuracy",
    }
    conditional = False

    @classmethod
    def report_note(cls, metrics: dict[str, float]) -> str:
        if "quality/n_fake" not in metrics:
            return ""
        return (
            f"Measured on {metrics['quality/n_fake']:.0f} generated and {metrics['quality/n_real']:.0f} real training "
            "images in the features of a classifier trained on the real data."
        )

    # --- set-up -------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        import torch

        from runner.generate.networks import Discriminator, Generator
        from runner.optim import make_optimizer

        c = self.config
        data = ctx.domains["data"].train
        channels, size = data.images.shape[1], data.images.shape[-1]
        self.classes = tuple(ctx.domains["data"].classes)
        n_classes = len(self.classes) if self.conditional else 0
        self.G = ctx.prepare(Generator(size, channels, c.nz, c.ngf, n_classes))
        self.D = ctx.prepare(Discriminator(size, channels, c.ndf, n_classes))
        betas = (c.beta1, c.beta2)
        self.opt_g = make_optimizer(self.G.parameters(), "adam", c.lr, betas=betas)
        self.opt_d = make_optimizer(self.D.parameters(), "adam", c.lr, betas=betas)
        if c.lr_decay:
            half = ctx.total_steps / 2

            def factor(step: int) -> float:
                return 1.0 if step < half else max(0.0, 1 - (step - half) / max(half, 1))

            self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
        if c.ema:
            from runner.averaging import averaged_copy

            self.G_ema = averaged_copy(self.G)
        # The method's own random stream (noise, flips): checkpointed, so a resumed run continues it.
        self.rng = ctx.generator("gan/noise", device=ctx.device)
        self.fixed_z = torch.randn(max(c.grid, 32), c.nz, generator=ctx.generator("gan/grid"))
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.curve: list[dict[str, float]] = []  # per-step values for losses.png
        # Steps not yet read back: (keys, their values stacked on the device), read all at once.
        self._unread: list[tuple[tuple[str, ...], Any]] = []
        self._quality_setup(ctx)

    def _quality_setup(self, ctx: RunContext) -> None:
        from runner.batches import to_network_range
        from runner.cache import data_context
        from runner.generate.quality import evaluator, features

        dom = ctx.domains["data"]
        # A tuple, so the engine's checkpoint (which saves every module attribute) leaves it out.
        self.quality_net = evaluator(dom.train, dom.test, len(dom.classes), data_context().cache_dir, ctx.device)
        # Real reference for the per-epoch distance: 1,000 training images, fixed.
        self.real_1k = features(self.evaluator, to_network_range(dom.train.subset(1000).images), ctx.device)

    @property
    def evaluator(self) -> Any:
        return self.quality_net[0]

    # --- one step's helpers -------------------------------------------------------------------
    def noise(self, n: int, ctx: RunContext) -> Any:
        import torch

        return torch.randn(n, self.config.nz, device=ctx.device, generator=self.rng)

    def targets(self, n: int, ctx: RunContext) -> tuple[Any, Any]:
        """Discriminator targets for real and fake images, with smoothing and flips as configured."""
        import torch

        c = self.config
        real = torch.full((n,), c.real_label, device=ctx.device)
        fake = torch.zeros(n, device=ctx.device)
        if c.flip:
            swap = torch.rand(n, device=ctx.device, generator=self.rng) < c.flip
            real, fake = torch.where(swap, fake, real), torch.where(swap, real, fake)
        return real, fake

    def after_step(self, ctx: Any, values: dict[str, Any]) -> dict[str, Any]:
        """Schedules and EMA after both updates; records the step for the curves figure (its
        values stay on the device until the figure or a checkpoint needs them)."""
        c = self.config
        if c.lr_decay:
            self.sched_g.step()
            self.sched_d.step()
        if c.ema:
            from runner.averaging import update_average

            update_average(self.G_ema, self.G, c.ema)
        import torch

        self._unread.append((tuple(values), torch.stack([torch.as_tensor(v).float() for v in values.values()])))
        return values

    def curve_values(self) -> list[dict[str, float]]:
        """Every step's values so far, read back from the device in one transfer."""
        if self._unread:
            import torch

            host = torch.stack([v for _, v in self._unread]).tolist()
            self.curve += [dict(zip(keys, row, strict=True)) for (keys, _), row in zip(self._unread, host, strict=True)]
            self._unread.clear()
        return self.curve

    # --- sampling -----------------------------------------------------------------------------
    def sampler(self) -> Any:
        """The generator samples come from: the EMA copy when there is one."""
        return self.G_ema if self.config.ema else self.G

    def sample(self, z: Any, labels: Any = None, batch: int = 500) -> Any:
        """Images in [-1, 1] from noise `z` (on the CPU or device), in eval mode, in batches."""
        import torch

        g = self.sampler()
        device = next(g.parameters()).device
        was = g.training
        g.eval()
        try:
            with torch.no_grad():
                parts = []
                for i in range(0, len(z), batch):
                    lab = labels[i : i + batch].to(device) if labels is not None else None
                    parts.append(g(z[i : i + batch].to(device), lab).float().cpu())
                return torch.cat(parts)
        finally:
            g.train(was)

    def grid_labels(self, n: int) -> Any:
        import torch

        return torch.arange(n) % self.G.n_classes if self.conditional else None

    def images(self, ctx: RunContext) -> dict[str, Any]:
        from runner.figures import to_grid

        z = self.fixed_z[: self.config.grid]
        return {"samples": to_grid((self.sample(z, self.grid_labels(len(z))) + 1) / 2, 8)}

    # --- metrics ------------------------------------------------------------------------------
    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """A quick Fréchet distance each epoch (1,000 samples against 1,000 training images)."""
        import torch

        from runner.generate.quality import features, frechet_distance

        z = torch.randn(1000, self.config.nz, generator=ctx.generator("gan/epoch-quality"))
        fake = self.sample(z, self.grid_labels(1000))
        return {"fd_1k": frechet_distance(features(self.evaluator, fake, ctx.device), self.real_1k)}

    def summarize(self, ctx: RunContext) -> dict[str, float]:
        """Fréchet distance and KID on `quality_samples` images, in the evaluator's features."""
        import torch

        from runner.batches import to_network_range
        from runner.generate.quality import features, frechet_distance, kernel_distance, label_accuracy

        c = self.config
        out = {"quality/classifier_acc": self.quality_net[1]}
        if c.quality_samples <= 0:
            return out
        train = ctx.domains["data"].train
        real_images = to_network_range(train.subset(c.quality_samples, seed=ctx.settings.seed).images)
        z = torch.randn(c.quality_samples, c.nz, generator=ctx.generator("gan/final-quality"))
        labels = self.grid_labels(c.quality_samples)
        fake = self.sample(z, labels)
        real_f, fake_f = features(self.evaluator, real_images, ctx.device), features(self.evaluator, fake, ctx.device)
        out.update(
            {
                "quality/fd": frechet_distance(fake_f, real_f),
                "quality/kid": kernel_distance(fake_f, real_f, seed=ctx.settings.seed),
                "quality/n_fake": float(len(fake)),
                "quality/n_real": float(len(real_images)),  # fewer than n_fake on a small dataset
            }
        )
        if self.conditional:
            out["quality/label_acc"] = label_accuracy(self.evaluator, fake, labels, ctx.device)
        if c.inception_weights:
            from runner.generate.quality import inception_features, inception_net

            net = inception_net(c.inception_weights, ctx.device)
            out["quality/inception_fid"] = frechet_distance(
                inception_features(net, fake, ctx.device), inception_features(net, real_images, ctx.device)
            )
        return out

    # --- figures and the logged model ---------------------------------------------------------
    def figures(self, ctx: RunContext) -> dict[str, Any]:
        from runner.figures import gan_curves_figure, grid_figure

        where = ctx.domains["data"].name
        z = self.fixed_z[:32]
        samples = (self.sample(z, self.grid_labels(32)) + 1) / 2
        return {
            "samples.png": grid_figure(samples, 8, f"{self.name} on {where}: 32 samples after {ctx.epoch} epochs"),
            "losses.png": gan_curves_figure(self.curve_values(), f"{self.name} on {where}"),
        }

    def inference_model(self) -> Any:
        from runner.generate.networks import Sampler

        return Sampler(copy.deepcopy(self.sampler()).cpu().eval(), self.classes if self.conditional else ())

    def inference_example(self, ctx: RunContext) -> Any:
        import torch

        return torch.randn(2, self.config.nz, generator=torch.Generator().manual_seed(0))

    # --- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.get_state(), "curve": list(self.curve_values())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        restore_generator(self.rng, state.pop("rng"))  # on another kind of device, reseeded
        self.curve, self._unread = list(state.pop("curve")), []
        super().load_state_dict(state)
