"""`AdaptMethod`: what every adaptation method shares, the classifier's evaluation, figures and
logged model, and augmentation with a random stream of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from runner.errors import Hw3Error
from runner.method import Method

if TYPE_CHECKING:
    import torch

    from runner.adapt.networks import DigitClassifier
    from runner.context import RunContext

C = TypeVar("C")


class AdaptMethod(Method[C]):
    """A classifier trained across a source and a target domain.

    Subclasses build `self.net` (a `DigitClassifier`) in `setup`, usually with `build_net`. A
    method with a domain discriminator (features -> one logit, target = 1) stores it as
    `self.discriminator` to have its accuracy reported each epoch. A config field `augment`
    (true by default in the built-ins) turns on `aug`, after `start_augmenting` in `setup`.
    """

    kind = "adapt"
    summary_metrics: ClassVar[tuple[str, ...]] = ("source_acc", "proxy_a_distance")
    report_figures: ClassVar[tuple[str, ...] | None] = ("tsne_class.png", "tsne_domain.png")
    figure_captions: ClassVar[dict[str, str]] = {
        "tsne_class.png": "t-SNE of source and target test features, by class",
        "tsne_domain.png": "t-SNE of source and target test features, by domain",
    }

    def start_augmenting(self, ctx: RunContext) -> None:
        """Give `aug` its own random generator, so a resumed run draws the same augmentations; each
        data-parallel process draws its own."""
        self.aug_gen = ctx.generator("augment", per_process=True)

    def aug(self, x: torch.Tensor) -> torch.Tensor:
        """`x` augmented when the method's config says `augment = true`, else unchanged."""
        from runner.adapt.augmentation import augment

        return augment(x, self.aug_gen) if getattr(self.config, "augment", False) else x

    def state_dict(self) -> dict[str, Any]:
        gen = getattr(self, "aug_gen", None)
        return {**super().state_dict(), **({"aug_gen": gen.get_state()} if gen is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "aug_gen" in state:
            self.aug_gen.set_state(state.pop("aug_gen"))
        super().load_state_dict(state)

    def build_net(self, ctx: RunContext, arch: str, batch_norm: bool, dropout: float = 0.0) -> DigitClassifier:
        """The digit classifier for this run's images (`arch` "auto" picks by their size), on the
        device; `dropout` drops channels of the last convolution's output while training."""
        from runner.adapt.networks import DigitClassifier, pick_arch

        src = ctx.domains["source"]
        channels, size = src.train.images.shape[1], src.train.images.shape[-1]
        net = DigitClassifier(pick_arch(arch, size), channels, size, len(src.classes), batch_norm, dropout)
        return ctx.prepare(net)

    def classifier(self) -> DigitClassifier:
        """The network whose head labels images; its features encode both domains unless
        `encoder` says otherwise."""
        return self.net

    def network(self, role: str) -> DigitClassifier:
        """The classifier applied to `role`'s images ("source" or "target"); the same one unless a
        method keeps per-domain state, such as DANN's target batch-norm statistics."""
        return self.classifier()

    def encoder(self, role: str) -> torch.nn.Module:
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

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        with self.evaluating():
            return self._evaluate(ctx)

    def _evaluate(self, ctx: RunContext) -> dict[str, float]:
        from runner.adapt.evaluation import (
            accuracy_metrics,
            collect,
            confusion,
            information_maximization,
            per_class_accuracy,
        )

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
            # One table row per class and epoch (tables/per_class_acc.json), not twenty metric series.
            rows = ctx.extras.setdefault("per_class_acc", [])
            rows += [[ctx.epoch + 1, role, c, a] for c, a in zip(dom.classes, per_class_accuracy(cm), strict=True)]
            if dom.val is not None and len(dom.val):  # what selection reads: never the test split
                val_logits = self.network(role).head(collect(self.encoder(role), dom.val, ctx).to(ctx.device))
                val_logits = val_logits.float().cpu()
                out[f"{role}_val_acc"] = float((val_logits.argmax(1) == dom.val.labels.cpu()).float().mean())
                if role == "target":
                    out["target_im"] = information_maximization(val_logits)
            elif role == "target":
                out["target_im"] = information_maximization(logits)
        disc = getattr(self, "discriminator", None)
        if disc is not None:
            import torch

            with torch.no_grad():
                ps = disc(feats["source"].to(ctx.device)).flatten().cpu() < 0
                pt = disc(feats["target"].to(ctx.device)).flatten().cpu() >= 0
            out["domain_acc"] = float(torch.cat([ps, pt]).float().mean())
        return out

    def summarize(self, ctx: RunContext) -> dict[str, float]:
        """Once at the end: the epoch each selection protocol picks (`selected/...`) and the proxy
        A-distance between source and target test features."""
        from runner.adapt.evaluation import collect, proxy_a_distance
        from runner.adapt.selection import select

        with self.evaluating():
            fs = collect(self.encoder("source"), ctx.domains["source"].test, ctx)
            ft = collect(self.encoder("target"), ctx.domains["target"].test, ctx)
        return {**select(ctx.history), "proxy_a_distance": proxy_a_distance(fs, ft, seed=ctx.settings.seed)}

    def figures(self, ctx: RunContext) -> dict[str, Any]:
        from runner.figures import confusion_figure

        out = {}
        row = self.report_row()
        trained = row.label if row else self.name
        for role in ("target", "source"):
            dom = ctx.domains[role]
            title = f"{role} test: {dom.name} ({trained})"
            out[f"confusion_{role}.png"] = confusion_figure(ctx.extras[f"{role}_confusion"].numpy(), dom.classes, title)
        if ctx.settings.tsne_points > 0:
            from runner.adapt.features import tsne

            with self.evaluating():
                out.update(tsne(self.encoder, ctx, f"{self.name} on {ctx.task.label}"))
        return out

    def tables(self, ctx: RunContext) -> dict[str, dict[str, Any]]:
        rows = ctx.extras.get("per_class_acc", [])
        return {"per_class_acc": {"columns": ["epoch", "domain", "class", "accuracy"], "data": rows}} if rows else {}

    def inference_model(self) -> torch.nn.Module:
        from runner.adapt.networks import FromUnitRange

        return FromUnitRange(self.classifier()).eval()


def load_classifier(run_id: str) -> DigitClassifier:
    """The digit classifier a finished adaptation run logged as its model (such as a baseline's)."""
    from runner.adapt.networks import DigitClassifier, FromUnitRange
    from runner.tracking import Tracker

    net = getattr(Tracker().load_model(run_id, FromUnitRange.from_spec), "net", None)
    if not isinstance(net, DigitClassifier):
        raise Hw3Error(f"run {run_id} did not log a digit classifier; give a finished baseline run")
    return net
