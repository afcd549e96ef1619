"""What every adaptation method shares: the classifier's evaluation, figures and logged model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from plugins.methods.nets import DigitClassifier, FromUnitRange, pick_arch
from runner import Method


class AdaptMethod(Method):
    """A classifier trained across a source and a target domain.

    Subclasses build `self.net` (a `DigitClassifier`) in `setup`, usually with `build_net`. A
    method with a domain discriminator (features -> one logit, target = 1) stores it as
    `self.discriminator` to have its accuracy reported each epoch.
    """

    kind = "adapt"

    def start_augmenting(self, ctx: Any) -> None:
        """Give `aug` its own random generator, so a resumed run draws the same augmentations; each
        data-parallel process draws its own."""
        import torch

        self.aug_gen = torch.Generator().manual_seed(ctx.settings.seed + 12345 + 1000 * ctx.dist.rank)

    def aug(self, x: Any) -> Any:
        """`x` augmented when the method's config says `augment = true`, else unchanged."""
        from plugins.methods.augment import augment

        return augment(x, self.aug_gen) if getattr(self.config, "augment", False) else x

    def state_dict(self) -> dict[str, Any]:
        gen = getattr(self, "aug_gen", None)
        return {**super().state_dict(), **({"aug_gen": gen.get_state()} if gen is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "aug_gen" in state:
            self.aug_gen.set_state(state.pop("aug_gen"))
        super().load_state_dict(state)

    def build_net(self, ctx: Any, arch: str, batch_norm: bool) -> DigitClassifier:
        src = ctx.domains["source"]
        channels, size = src.train.images.shape[1], src.train.images.shape[-1]
        return ctx.prepare(DigitClassifier(pick_arch(arch, size), channels, size, len(src.classes), batch_norm))

    def classifier(self) -> DigitClassifier:
        """The network whose head labels images; its features encode both domains unless
        `encoder` says otherwise."""
        return self.net

    def network(self, role: str) -> DigitClassifier:
        """The classifier applied to `role`'s images ("source" or "target"); the same one unless a
        method keeps per-domain state, such as DANN's target batch-norm statistics."""
        return self.classifier()

    def encoder(self, role: str) -> Any:
        """The feature extractor for `role`; ADDA has one per domain."""
        return self.network(role).features

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Every network in eval mode for the block, then back to the mode it was in."""
        modules = [
            self.classifier(),
            self.network("source"),
            self.network("target"),
            self.encoder("source"),
            self.encoder("target"),
            getattr(self, "discriminator", None),
        ]
        modes = [(m, m.training) for m in modules if m is not None]
        for m, _ in modes:
            m.eval()
        try:
            yield
        finally:
            for m, mode in modes:
                m.train(mode)

    def evaluate(self, ctx: Any) -> dict[str, float]:

        with self.evaluating():
            return self._evaluate(ctx)

    def _evaluate(self, ctx: Any) -> dict[str, float]:
        from runner.metrics import accuracy_metrics, collect, confusion, information_maximization

        out: dict[str, float] = {}
        feats = {}
        for role in ("target", "source"):
            dom = ctx.domains[role]
            f = collect(self.encoder(role), dom.test, ctx)
            feats[role] = f
            logits = self.network(role).head(f.to(ctx.device)).float().cpu()
            cm = confusion(logits.argmax(1), dom.test.labels, len(dom.classes))
            ctx.extras[f"{role}_confusion"] = cm
            out.update(accuracy_metrics(cm, role))
            if role == "target":
                out["target_im"] = information_maximization(logits)
        disc = getattr(self, "discriminator", None)
        if disc is not None:
            import torch

            with torch.no_grad():
                ps = disc(feats["source"].to(ctx.device)).flatten().cpu() < 0
                pt = disc(feats["target"].to(ctx.device)).flatten().cpu() >= 0
            out["domain_acc"] = float(torch.cat([ps, pt]).float().mean())
        return out

    def summarize(self, ctx: Any) -> dict[str, float]:
        """The proxy A-distance between source and target test features, once at the end."""
        from runner.metrics import collect, proxy_a_distance

        with self.evaluating():
            fs = collect(self.encoder("source"), ctx.domains["source"].test, ctx)
            ft = collect(self.encoder("target"), ctx.domains["target"].test, ctx)
        return {"proxy_a_distance": proxy_a_distance(fs, ft, seed=ctx.settings.seed)}

    def figures(self, ctx: Any) -> dict[str, Any]:
        from runner.viz import confusion_figure

        out = {}
        trained = getattr(self.config, "train_on", self.name)
        for role in ("target", "source"):
            dom = ctx.domains[role]
            title = f"{role} test: {dom.name} ({trained})"
            out[f"confusion_{role}.png"] = confusion_figure(ctx.extras[f"{role}_confusion"].numpy(), dom.classes, title)
        if ctx.settings.tsne_points > 0:
            with self.evaluating():
                out.update(tsne(self.encoder, ctx, f"{self.name} on {ctx.resolved.pair}"))
        return out

    def inference_model(self) -> Any:
        return FromUnitRange(self.classifier()).eval()


def with_statistics_of(net: Any, split: Any, ctx: Any, limit: int = 2048, batch_size: int = 256) -> Any:
    """A copy of `net`, in eval mode, whose batch-norm layers hold the statistics of (up to
    `limit` random) images of `split`: AdaBN (Li et al. 2016)."""
    import copy

    import torch
    from torch import nn

    from runner.data import batches

    twin = copy.deepcopy(net)
    for m in twin.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below, so they must be equal in size
    n = min(len(split), limit)
    part = split.subset(n if n < batch_size else n - n % batch_size)
    twin.train()
    with torch.no_grad(), ctx.autocast():
        for x, _ in batches(part, batch_size):
            twin(x)
    return twin.eval()


def tsne(encoder: Any, ctx: Any, title: str) -> dict[str, Any]:
    """t-SNE figures of the features of up to `tsne_points` source and target test images;
    `encoder(role)` gives the feature extractor of each domain (in eval mode)."""
    import torch

    from runner.metrics import collect
    from runner.viz import tsne_figures

    half = ctx.settings.tsne_points // 2
    feats, labels, domains = [], [], []
    for d, role in enumerate(("source", "target")):
        split = ctx.domains[role].test
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:half]
        part = split.take(idx.to(split.images.device))
        feats.append(collect(encoder(role), part, ctx))
        labels.append(part.labels.cpu())
        domains.append(torch.full((len(part),), d))
    names = [f"source: {ctx.domains['source'].name}", f"target: {ctx.domains['target'].name}"]
    return tsne_figures(
        torch.cat(feats).numpy(),
        torch.cat(labels).numpy(),
        torch.cat(domains).numpy(),
        ctx.domains["source"].classes,
        names,
        title,
        seed=ctx.settings.seed,
    )
