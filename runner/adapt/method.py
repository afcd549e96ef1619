"""`AdaptMethod`: what every adaptation method shares, the classifier's evaluation, figures and
logged model, its optimizer, and augmentation with a random stream of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from runner.adapt.config import ClassifierConfig
from runner.errors import Hw3Error
from runner.method import Method
from runner.validator import Outputs

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from torch.optim.optimizer import ParamsT

    from runner.adapt.networks import DigitClassifier
    from runner.context import RunContext
    from runner.datasets import Split

C = TypeVar("C", bound=ClassifierConfig)

PER_CLASS_COLUMNS = ["epoch", "domain", "class", "accuracy"]


class AdaptMethod(Method[C]):
    """A classifier trained across a source and a target domain.

    Its `Config` inherits `ClassifierConfig` (`arch`, `batch_norm`, `dropout`, `augment`), or
    `OptimizedClassifierConfig` for one optimizer built by `make_optimizer`. Subclasses build
    `self.net` (a `DigitClassifier`) in `setup`, usually with `build_net`. A method with a domain
    discriminator (features -> one logit, target = 1) stores it as `self.discriminator` to have its
    accuracy reported each epoch. `aug` augments after `start_augmenting` in `setup`.

    What a domain's images go through: `network(role)` (DANN's carries that domain's batch-norm
    statistics) and its feature extractor `encoder(role)` (ADDA's target encoder); `outputs` gives
    both results for a split, `classifier()` is the logged model.
    """

    kind = "adapt"
    summary_metrics: ClassVar[tuple[str, ...]] = ("source_acc", "proxy_a_distance")
    report_figures: ClassVar[tuple[str, ...] | None] = ("tsne_class.png", "tsne_domain.png")
    figure_captions: ClassVar[dict[str, str]] = {
        "tsne_class.png": "t-SNE of source and target test features, by class",
        "tsne_domain.png": "t-SNE of source and target test features, by domain",
        "validators.png": "each validator's score by epoch (its pick marked) above target test accuracy",
    }
    net: DigitClassifier  # built in `setup`
    # Set in `setup` by a method that has them; None (the class's) when it has not.
    discriminator: torch.nn.Module | None = None
    aug_gen: torch.Generator | None = None

    def __init__(self, config: C) -> None:
        super().__init__(config)
        # What the figures and tables at the end read, saved in the checkpoint so a resumed run
        # keeps the epochs before it: [epoch, domain, class, accuracy] rows, and each domain's
        # confusion matrix at the last evaluation.
        self.per_class_acc: list[list[Any]] = []
        self.confusions: dict[str, torch.Tensor] = {}
        # The target validation split's softmax predictions (float16, on the CPU) at each evaluated
        # epoch, by 1-based epoch: what study-level validators (EnsV) ensemble, here at the end of
        # the run and in `hw3 tune` from the artifact it is saved as (record.TARGET_VAL_PREDICTIONS).
        self.target_val_probs: dict[int, torch.Tensor] = {}

    # -- set-up ----------------------------------------------------------------------------------
    def build_net(self, ctx: RunContext, arch: str, batch_norm: bool, dropout: float = 0.0) -> DigitClassifier:
        """The digit classifier for this run's images (`arch` "auto" picks by their size), on the
        device; `dropout` drops channels of the last convolution's output while training."""
        from runner.adapt.networks import DigitClassifier, pick_arch

        src = ctx.domains["source"]
        channels, size = src.train.images.shape[1], src.train.images.shape[-1]
        net = DigitClassifier(pick_arch(arch, size), channels, size, len(src.classes), batch_norm, dropout)
        return ctx.prepare(net)

    def make_optimizer(
        self,
        params: ParamsT,
        *,
        optimizer: str | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        **options: Any,
    ) -> torch.optim.Optimizer:
        """The config's `optimizer` with its `lr` and `weight_decay` (`OptimizedClassifierConfig`)
        over `params`; an argument given replaces that key, and `options` (`betas`, `momentum`)
        go to `runner.optim.make_optimizer`."""
        from runner.optim import make_optimizer

        c: Any = self.config  # only the keys not given need to be in it
        return make_optimizer(
            params,
            c.optimizer if optimizer is None else optimizer,
            c.lr if lr is None else lr,
            weight_decay=c.weight_decay if weight_decay is None else weight_decay,
            **options,
        )

    def start_augmenting(self, ctx: RunContext) -> None:
        """Give `aug` its own random generator, on the run's device (the draws are made where the
        images are), so a resumed run draws the same augmentations; each data-parallel process
        draws its own."""
        self.aug_gen = ctx.generator("augment", per_process=True, device=ctx.device)

    def aug(self, x: torch.Tensor) -> torch.Tensor:
        """`x` augmented when the config says `augment = true`, else unchanged."""
        if not self.config.augment:
            return x
        if self.aug_gen is None:
            raise Hw3Error(f"method '{self.name}': call self.start_augmenting(ctx) in setup before self.aug(x)")
        from runner.adapt.augmentation import augment

        out: torch.Tensor = augment(x, self.aug_gen)
        return out

    def aug_each(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Each of `xs` augmented on its own draws, in one batched call: the same distribution as
        an `aug` call each (the operations are per image), not the same draws, in fewer kernels."""
        if not self.config.augment or len(xs) < 2:
            return [self.aug(x) for x in xs]
        import torch

        return list(self.aug(torch.cat(xs)).split([len(x) for x in xs]))

    # -- checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            **super().state_dict(),
            "per_class_acc": [list(row) for row in self.per_class_acc],
            "confusions": dict(self.confusions),
            "target_val_probs": dict(self.target_val_probs),
        }
        if self.aug_gen is not None:
            state["aug_gen"] = self.aug_gen.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "aug_gen" in state:
            if self.aug_gen is None:
                raise Hw3Error(
                    f"method '{self.name}': its checkpoint has augmentation state; call start_augmenting in setup"
                )
            from runner.seeding import restore_generator

            restore_generator(self.aug_gen, state.pop("aug_gen"))  # on another kind of device, reseeded
        # Checkpoints written before these were saved have neither: the table starts at the resume.
        self.per_class_acc = [list(row) for row in state.pop("per_class_acc", [])]
        self.confusions = dict(state.pop("confusions", {}))
        self.target_val_probs = dict(state.pop("target_val_probs", {}))
        super().load_state_dict(state)

    # -- the networks a domain's images go through -----------------------------------------------
    def classifier(self) -> torch.nn.Module:
        """The network whose head labels images, logged as the run's model; its features encode
        both domains unless `encoder` says otherwise."""
        return self.net

    def network(self, role: str) -> torch.nn.Module:
        """The classifier (with `features` and `head`) applied to `role`'s images ("source" or
        "target"); the same one unless a method keeps per-domain state, such as DANN's target
        batch-norm statistics."""
        return self.classifier()

    def encoder(self, role: str) -> torch.nn.Module:
        """The feature extractor for `role`; ADDA has one per domain."""
        net: Any = self.network(role)  # any classifier with `features` and `head`
        features: torch.nn.Module = net.features
        return features

    def outputs(self, role: str, split: Split, ctx: RunContext) -> Outputs:
        """`split`'s images through `role`'s encoder and head, in eval mode and evaluation
        batches: the features and logits, on the CPU."""
        import torch

        from runner.adapt.evaluation import collect

        net: Any = self.network(role)
        with self.evaluating():
            features = collect(self.encoder(role), split, ctx)
            with torch.no_grad():
                logits = net.head(features.to(ctx.device)).float().cpu()
        return Outputs(features, logits)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Every network in eval mode for the block, then each layer back in the mode it was in."""
        roots = [
            self.classifier(),
            self.network("source"),
            self.network("target"),
            self.encoder("source"),
            self.encoder("target"),
            self.discriminator,
        ]
        live = [m for m in roots if m is not None]
        # Layer by layer: a method may hold part of a network in eval mode (ADDA's frozen source).
        modes = {m: m.training for root in live for m in root.modules()}
        for root in live:
            root.eval()
        try:
            yield
        finally:
            for m, mode in modes.items():
                m.training = mode

    # -- results ---------------------------------------------------------------------------------
    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        from runner.adapt.evaluation import accuracy_metrics, confusion, per_class_accuracy

        out: dict[str, float] = {}
        features = {}
        val: dict[str, Outputs] = {}
        with self.evaluating():
            for role in ("target", "source"):
                dom = ctx.domains[role]
                test = self.outputs(role, dom.test, ctx)
                features[role] = test.features
                cm = confusion(test.logits.argmax(1), dom.test.labels, len(dom.classes))
                self.confusions[role] = cm
                out.update(accuracy_metrics(cm, role))
                # One table row per class and epoch (tables/per_class_acc.json), not twenty metric series.
                self.per_class_acc += [
                    [ctx.epoch + 1, role, c, a] for c, a in zip(dom.classes, per_class_accuracy(cm), strict=True)
                ]
                if dom.val is not None and len(dom.val):  # what selection reads: never the test split
                    val[role] = self.outputs(role, dom.val, ctx)
                    out[f"{role}_val_acc"] = float((val[role].logits.argmax(1) == dom.val.labels.cpu()).float().mean())
                    if role == "target":
                        self.target_val_probs[ctx.epoch + 1] = val[role].logits.float().softmax(1).half()
            if self.discriminator is not None:
                import torch

                with torch.no_grad():  # source features get a logit below 0, target ones from 0
                    ps = self.discriminator(features["source"].to(ctx.device)).flatten().cpu() < 0
                    pt = self.discriminator(features["target"].to(ctx.device)).flatten().cpu() >= 0
                out["domain_acc"] = float(torch.cat([ps, pt]).float().mean())
        if len(val) == 2:
            out.update(self.validate(ctx, val["source"], val["target"]))
        return out

    def validate(self, ctx: RunContext, source: Outputs, target: Outputs) -> dict[str, float]:
        """`validator/<name>` for each of the run's per-epoch validators, from the validation splits'
        outputs and images; only an oracle (`uses_target_labels`) is given the target's labels.
        Study-level validators (`StudyValidator`) have no per-epoch score: `summarize` runs them."""
        from runner.validator import ValidationData, is_study_level

        dom_s, dom_t = ctx.domains["source"], ctx.domains["target"]
        assert dom_s.val is not None and dom_t.val is not None
        blind = ValidationData(
            source,
            dom_s.val.labels.cpu(),
            target,
            None,
            ctx.settings.seed,
            source_images=dom_s.val.images,
            target_images=dom_t.val.images,
            device=str(ctx.device),
        )
        labelled = dataclasses.replace(blind, target_labels=dom_t.val.labels.cpu())
        out = {}
        for name, validator in self._validators(ctx).items():
            if is_study_level(validator):
                continue
            try:
                value = validator.score(labelled if validator.uses_target_labels else blind)
            except Exception as exc:  # a plugin's validator: name it rather than fail inside the method
                raise Hw3Error(f"validator '{name}' raised {type(exc).__name__}: {exc}") from exc
            out[f"validator/{name}"] = float(value)
        return out

    @staticmethod
    def _validators(ctx: RunContext) -> dict[str, Any]:
        if ctx.validators is not None:
            return ctx.validators
        from runner.adapt.validators import builtin_validators

        return {v.name: v for v in builtin_validators()}

    def select_by_candidates(self, ctx: RunContext) -> dict[str, float]:
        """`selected/<name>/...` for each study-level validator, its candidates this run's evaluated
        epochs (their target validation predictions), scored together once at the end."""
        from runner.adapt.selection import select_scored
        from runner.validator import Candidate, is_study_level

        epochs = sorted(self.target_val_probs)
        if not epochs:
            return {}
        candidates = [Candidate(self.target_val_probs[e].float(), f"epoch {e}") for e in epochs]
        out: dict[str, float] = {}
        for name, validator in self._validators(ctx).items():
            if not is_study_level(validator):
                continue
            try:
                scores = validator.score_candidates(candidates)
            except Exception as exc:
                raise Hw3Error(f"validator '{name}' raised {type(exc).__name__}: {exc}") from exc
            if len(scores) != len(candidates):
                raise Hw3Error(f"validator '{name}' gave {len(scores)} scores for {len(candidates)} candidates")
            out.update(select_scored(ctx.history, name, epochs, [float(v) for v in scores]))
        return out

    def summarize(self, ctx: RunContext) -> dict[str, float]:
        """Once at the end: the epoch each selection protocol picks (`selected/...`, study-level
        validators' among the run's epochs included) and the proxy A-distance between source and
        target test features."""
        from runner.adapt.evaluation import proxy_a_distance
        from runner.adapt.selection import select

        fs = self.outputs("source", ctx.domains["source"].test, ctx).features
        ft = self.outputs("target", ctx.domains["target"].test, ctx).features
        return {
            **select(ctx.history),
            **self.select_by_candidates(ctx),
            "proxy_a_distance": proxy_a_distance(fs, ft, seed=ctx.settings.seed),
        }

    def artifacts(self, ctx: RunContext) -> dict[str, bytes]:
        """The target validation predictions of every evaluated epoch (record.TARGET_VAL_PREDICTIONS),
        for a study to ensemble its trials by (`hw3 tune --select ensv`); none without a target
        validation split."""
        from runner import record
        from runner.adapt.selection import Predictions, encode_predictions, images_fingerprint

        val = ctx.domains["target"].val
        epochs = sorted(self.target_val_probs)
        if not epochs or val is None or len(val) != len(self.target_val_probs[epochs[-1]]):
            return {}
        import torch

        probs = torch.stack([self.target_val_probs[e] for e in epochs]).numpy()
        return {
            record.TARGET_VAL_PREDICTIONS: encode_predictions(
                Predictions(epochs, probs, images_fingerprint(val.images))
            )
        }

    def figures(self, ctx: RunContext) -> dict[str, Figure]:
        from runner.figures import confusion_figure, validators_figure

        out = {}
        if any(k.startswith("validator/") for h in ctx.history for k in h):
            out["validators.png"] = validators_figure(ctx.history, f"validators of {self.name} on {ctx.task.label}")
        row = self.report_row()
        trained = row.label if row else self.name
        for role in ("target", "source"):
            if role in self.confusions:  # none when no epoch was evaluated
                dom = ctx.domains[role]
                title = f"{role} test: {dom.name} ({trained})"
                out[f"confusion_{role}.png"] = confusion_figure(self.confusions[role].numpy(), dom.classes, title)
        if ctx.settings.tsne_points > 0:
            from runner.adapt.features import tsne

            with self.evaluating():
                out.update(tsne(self.encoder, ctx, f"{self.name} on {ctx.task.label}"))
        return out

    def tables(self, ctx: RunContext) -> dict[str, dict[str, Any]]:
        rows = [list(row) for row in self.per_class_acc]
        return {"per_class_acc": {"columns": list(PER_CLASS_COLUMNS), "data": rows}} if rows else {}

    def inference_model(self) -> torch.nn.Module:
        from runner.adapt.networks import FromUnitRange

        return FromUnitRange(self.classifier()).eval()


def load_classifier(run_id: str) -> DigitClassifier:
    """The digit classifier a finished adaptation run logged as its model (such as a baseline's)."""
    from runner.adapt.networks import DigitClassifier, FromUnitRange
    from runner.store import reader

    net = getattr(reader().load_model(run_id, FromUnitRange.from_spec), "net", None)
    if not isinstance(net, DigitClassifier):
        raise Hw3Error(f"run {run_id} did not log a digit classifier; give a finished baseline run")
    return net
