"""`gan`: the PyTorch tutorial's DCGAN (Radford et al. 2016) with the non-saturating loss.

One step updates D on a real batch and a fake batch, then G (`g_steps` times) to make D call
its fakes real. Both networks output logits; BCEWithLogits is the tutorial's Sigmoid + BCE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner import hookimpl
from runner.generate import GanConfig, GenerativeMethod

if TYPE_CHECKING:
    from runner import Batch, RunContext


class Gan(GenerativeMethod[GanConfig]):
    name = "gan"
    description = "DCGAN, the PyTorch tutorial's architecture at 64, 32 or 28 px (Radford et al. 2016)"
    run_defaults = {"epochs": 20}

    def train_step(self, ctx: RunContext, batch: Batch) -> dict[str, float]:
        import torch

        real = batch["data"].x
        n = len(real)
        t_real, t_fake = self.targets(n, ctx)
        with ctx.autocast():
            fake = self.G(self.noise(n, ctx))
            out_real, _ = self.D(real)
            out_fake, _ = self.D(fake.detach())
            d_loss = self.bce(out_real.float(), t_real) + self.bce(out_fake.float(), t_fake)
        ctx.optimize(d_loss, self.opt_d)
        ones = torch.ones(n, device=ctx.device)
        for k in range(self.config.g_steps):
            if k:  # the report's variant: G sees a second, fresh batch of noise per step
                fake = self.G(self.noise(n, ctx))
            with ctx.autocast():
                out_g, _ = self.D(fake)
                g_loss = self.bce(out_g.float(), ones)
            ctx.optimize(g_loss, self.opt_g)
        d_x, d_g_z = torch.sigmoid(out_real.detach().float()).mean(), torch.sigmoid(out_fake.detach().float()).mean()
        return self.after_step(ctx, {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "d_x": d_x, "d_g_z": d_g_z})


@hookimpl
def hw3_register_methods(register: Any) -> None:
    register(Gan)
