"""The built-in validators: scores of a finished epoch that need no target labels (but the oracle),
larger meaning better. Each reads the validation splits only, never a test split.

`im`, `bnm` and `snd` read the target's predictions alone, so they cannot tell a permutation of
the classes from the right ones (ADDA's target encoder can send every image to a wrong class,
confidently and evenly: README, "Choosing settings without target labels"). Two see it: `reverse`
anchors the predictions to the source labels through the images, and `ensv` (a `StudyValidator`)
rates a candidate by its agreement with the ensemble of all, where a lone permuted candidate
disagrees with the rest on nearly every image.

Musgrave et al. ("Benchmarking Validation Methods for Unsupervised Domain Adaptation", 2022)
compare these on real adaptation runs: none is reliable everywhere, which is why `hw3 tune` prints
each one's choice beside the oracle's. torch and scikit-learn are imported inside `score`, so
registering these keeps `hw3 list` fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner.validator import Candidate, StudyValidator, ValidationData, Validator

if TYPE_CHECKING:
    import torch

# SND's and DEV's work grows with the square of the points or with a fitted classifier: a fixed
# random subsample of this many per domain keeps each epoch's scoring to a fraction of a second.
MAX_POINTS = 2000


def _subsample(n: int, seed: int, limit: int = MAX_POINTS) -> torch.Tensor | slice:
    if n <= limit:
        return slice(None)
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]


class SourceAccuracy(Validator):
    name = "source_val"
    description = "accuracy on the source validation split (source labels only)"
    citation = "the usual baseline"

    def score(self, data: ValidationData) -> float:
        return float((data.source.logits.argmax(1) == data.source_labels).float().mean())


class InformationMaximization(Validator):
    name = "im"
    description = "entropy of the mean target prediction minus the mean entropy of each (confident, diverse)"
    citation = "Hu et al. 2017; Liang et al. 2020"

    def score(self, data: ValidationData) -> float:
        from runner.adapt.evaluation import information_maximization

        return information_maximization(data.target.logits)


class SoftNeighborhoodDensity(Validator):
    name = "snd"
    description = "entropy of each target point's softmax similarity to the others' predictions"
    citation = "Saito et al., ICCV 2021"
    temperature = 0.05  # the paper's

    def score(self, data: ValidationData) -> float:
        import torch

        probs = data.target.logits.float().softmax(1)[_subsample(len(data.target.logits), data.seed)]
        p = torch.nn.functional.normalize(probs, dim=1)
        sim = p @ p.T
        sim.fill_diagonal_(float("-inf"))  # a point is not its own neighbour
        nbr = (sim / self.temperature).softmax(1)
        return float(-(nbr * nbr.clamp_min(1e-12).log()).sum(1).mean())


class BatchNuclearNorm(Validator):
    name = "bnm"
    description = "nuclear norm of the target prediction matrix over its rows (confident and diverse)"
    citation = "Cui et al., CVPR 2020"

    def score(self, data: ValidationData) -> float:
        import torch

        probs = data.target.logits.float().softmax(1)
        return float(torch.linalg.svdvals(probs).sum() / len(probs))


class DeepEmbeddedValidation(Validator):
    """The source validation loss, each image weighted by how target-like its features are (a
    domain classifier's density ratio, cross-fitted on two halves), with the paper's control
    variate; negated, so that larger is better."""

    name = "dev"
    description = "source validation loss weighted towards target-like images (negated: larger is better)"
    citation = "You et al., ICML 2019"

    def score(self, data: ValidationData) -> float:
        import numpy as np
        import torch
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        keep_s = _subsample(len(data.source_labels), data.seed)
        keep_t = _subsample(len(data.target.features), data.seed + 1)
        fs = data.source.features[keep_s].flatten(1).float().numpy()
        ft = data.target.features[keep_t].flatten(1).float().numpy()
        loss = torch.nn.functional.cross_entropy(
            data.source.logits[keep_s].float(), data.source_labels[keep_s].long(), reduction="none"
        ).numpy()
        x = np.concatenate([fs, ft])
        y = np.r_[np.zeros(len(fs)), np.ones(len(ft))]
        fold = np.random.default_rng(data.seed).permutation(len(x)) % 2
        p_target = np.empty(len(x))
        for k in (0, 1):  # each half scored by a classifier fitted on the other
            fit, held = fold != k, fold == k
            scaler = StandardScaler().fit(x[fit])
            clf = LogisticRegression(max_iter=300, C=0.1).fit(scaler.transform(x[fit]), y[fit])
            p_target[held] = clf.predict_proba(scaler.transform(x[held]))[:, 1]
        p = np.clip(p_target[: len(fs)], 1e-6, 1 - 1e-6)
        w = (p / (1 - p)) * (len(fs) / len(ft))  # density ratio target / source at each source image
        wl = w * loss
        var = w.var(ddof=1) if len(w) > 1 else 0.0
        eta = -np.cov(wl, w)[0, 1] / var if var > 0 else 0.0
        return float(-(wl.mean() + eta * w.mean() - eta))


class ReverseValidation(Validator):
    """Reverse (circular) validation anchored to the source labels: a fresh small CNN learns the
    target validation images with this epoch's predicted labels as its targets, and its accuracy
    on the labelled source validation images is the score. A candidate that labels the target
    right teaches a classifier that is right on the source; one that permutes the classes teaches
    the permutation, which the source labels expose. It works in input space, from the images, so
    that a permuted target encoder cannot pass it as it would pass a version on its own features.

    Cheap enough for every epoch: `passes` passes over the target images (at least `min_steps`,
    at most `steps` Adam steps: a small split is learned sooner) of `batch_size` images (random inversion
    and per-channel gain, so that digits learned in MNIST-M's colours are read on MNIST's grey)
    on at most `max_images` images of each split, on the run's device, seeded from the run's seed
    and drawn from generators of its own (the run's random streams are untouched, so a resumed run
    scores alike). Measured with 1 thread on a 2-core CPU busy with other work: 1.0 s a call on
    the 28x28x3 mnist:mnistm validation splits (400 images each), 1.25 s on the 32x32x3
    syndigits:mnistm ones (1,200 source, 400 target), against about 2.6 s of a DANN training
    epoch there; so it runs every epoch, and its pick is a checkpoint as well as a trial.
    """

    name = "reverse"
    description = (
        "accuracy on the source validation split of a small CNN trained on the target validation images "
        "with this epoch's predicted labels (sees a permutation of the classes)"
    )
    citation = "Zhong et al., ECML 2010; Ganin et al., JMLR 2016 (reverse validation)"
    steps = 200
    min_steps = 50
    passes = 32  # 200 steps on the 400-image validation splits of the 10%-held-out pairs
    batch_size = 64
    lr = 3e-3
    max_images = 2000

    def score(self, data: ValidationData) -> float:
        import torch

        if data.source_images is None or data.target_images is None or not len(data.target_images):
            return float("nan")  # a caller that gives no images: no score, never chosen
        device = torch.device(data.device)
        g = torch.Generator().manual_seed(data.seed)
        keep_t = _subsample(len(data.target_images), data.seed, self.max_images)
        keep_s = _subsample(len(data.source_images), data.seed + 1, self.max_images)
        xt = _standardise(data.target_images[keep_t].to(device))
        yt = data.target.logits.argmax(1)[keep_t].to(device)
        xs = _standardise(data.source_images[keep_s].to(device))
        ys = data.source_labels[keep_s].to(device)
        net = _small_cnn(xt.shape[1], xt.shape[-1], data.target.logits.shape[1], data.seed).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        with torch.enable_grad():  # evaluation runs under no_grad
            steps = min(self.steps, max(self.min_steps, -(-self.passes * len(xt) // self.batch_size)))
            for _ in range(steps):
                i = torch.randint(len(xt), (self.batch_size,), generator=g).to(device)
                loss = torch.nn.functional.cross_entropy(net(_jitter(xt[i], g)), yt[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            right = sum(
                int((net(xs[k : k + 1000]).argmax(1) == ys[k : k + 1000]).sum()) for k in range(0, len(xs), 1000)
            )
        return right / len(xs)


def _standardise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as floats of zero mean and unit spread per image (contrast is not the digit)."""
    x = images.float()
    x = x - x.mean((1, 2, 3), keepdim=True)
    return x / x.std((1, 2, 3), keepdim=True).clamp_min(1.0)


def _jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image's channels scaled by a random gain in [0.5, 1.5), standardised again, and half
    of them inverted: a digit's shape, whatever its colours."""
    import torch

    n, c = x.shape[:2]
    gain = (0.5 + torch.rand(n, c, 1, 1, generator=g)).to(x.device)
    sign = torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.5, -1.0, 1.0).to(x.device)
    x = x * gain
    x = x - x.mean((1, 2, 3), keepdim=True)
    return sign * x / x.std((1, 2, 3), keepdim=True).clamp_min(1e-3)


def _small_cnn(channels: int, size: int, classes: int, seed: int) -> torch.nn.Module:
    """Two strided convolutions and a linear layer, initialised from `seed` on the CPU without
    touching the global random state."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        body = nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = body(torch.zeros(1, channels, size, size)).shape[1]
        return nn.Sequential(body, nn.Linear(width, classes))


class EnsembleValidation(StudyValidator):
    """EnsV: the candidates' target predictions averaged, the ensemble's argmax taken as
    pseudo-labels, and each candidate scored by its accuracy against them. An ensemble is at
    least as good as its average member, so the candidate that agrees with it most is never the
    worst (the paper's guarantee); a candidate that permutes the classes disagrees with the others
    on nearly every image and scores last, unless most candidates share its permutation."""

    name = "ensv"
    description = (
        "agreement of the target predictions with the ensemble of all candidates (a run's epochs, a study's "
        "trials): study-level, no per-epoch score"
    )
    citation = "Hu et al., NeurIPS 2024 (EnsV: ensemble-based selection)"

    def score_candidates(self, candidates: Sequence[Candidate]) -> list[float]:
        import torch

        if not candidates:
            return []
        probs = [c.target_probs.float() for c in candidates]
        shapes = {tuple(p.shape) for p in probs}
        if len(shapes) != 1:
            raise ValueError(f"candidates predict different splits (shapes {sorted(shapes)}); ensemble only alike ones")
        pseudo = torch.stack(probs).mean(0).argmax(1)
        return [float((p.argmax(1) == pseudo).float().mean()) for p in probs]


class Oracle(Validator):
    name = "oracle"
    description = "accuracy on the target validation split: uses target labels (an upper bound, not a result)"
    uses_target_labels = True
    citation = "what the labels would choose"

    def score(self, data: ValidationData) -> float:
        assert data.target_labels is not None
        return float((data.target.logits.argmax(1) == data.target_labels).float().mean())


def builtin_validators() -> list[Validator]:
    """One instance of each, in the order tables list them (the oracle last)."""
    return [
        SourceAccuracy(),
        InformationMaximization(),
        SoftNeighborhoodDensity(),
        BatchNuclearNorm(),
        DeepEmbeddedValidation(),
        ReverseValidation(),
        EnsembleValidation(),
        Oracle(),
    ]
