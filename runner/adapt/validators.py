"""The built-in validators: scores of a finished epoch that need no target labels (but the oracle),
larger meaning better. Each reads the validation splits only, never a test split.

Musgrave et al. ("Benchmarking Validation Methods for Unsupervised Domain Adaptation", 2022)
compare these on real adaptation runs: none is reliable everywhere, which is why `hw3 tune` prints
each one's choice beside the oracle's. torch and scikit-learn are imported inside `score`, so
registering these keeps `hw3 list` fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.validator import ValidationData, Validator

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
        Oracle(),
    ]
