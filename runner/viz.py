"""Figures a person would rather look at than read: confusion matrices and training curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix with counts, true labels down, predictions across."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=110)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}  (accuracy {acc:.1%})", fontsize=10)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return fig


def curves_figure(history: Sequence[dict[str, float]], title: str) -> Figure:
    """Per-epoch training losses (left) and accuracies (right)."""
    epochs = np.arange(1, len(history) + 1)
    keys = sorted({k for h in history for k in h if "/" not in k.removeprefix("train/")})
    losses = [k for k in keys if not k.endswith("acc")]
    accs = [k for k in keys if k.endswith("acc")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for k in losses:
        a1.plot(epochs, [h.get(k, np.nan) for h in history], marker=".", label=k)
    for k in accs:
        a2.plot(epochs, [100 * h.get(k, np.nan) for h in history], marker=".", label=k)
    a1.set(xlabel="epoch", ylabel="loss", title="losses")
    a2.set(xlabel="epoch", ylabel="%", title="accuracy")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def tsne_figures(
    features: np.ndarray,
    labels: np.ndarray,
    domains: np.ndarray,
    classes: Sequence[str],
    domain_names: Sequence[str],
    title: str,
    seed: int = 0,
) -> dict[str, Figure]:
    """t-SNE of features, drawn twice: coloured by class and coloured by domain (the report's
    figures 5 to 8). `domains` holds 0 for source and 1 for target points."""
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(5.0, (len(features) - 1) / 4))
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)
    figs = {}
    fig, ax = plt.subplots(figsize=(6.4, 6), dpi=110)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        m = labels == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(k % cmap.N), label=name, alpha=0.8)
    ax.legend(markerscale=4, fontsize=8, ncol=2, loc="best", title="class")
    ax.set(title=f"{title}: by class", xticks=[], yticks=[])
    fig.tight_layout()
    figs["tsne_class.png"] = fig
    fig, ax = plt.subplots(figsize=(6.4, 6), dpi=110)
    for d, (name, colour) in enumerate(zip(domain_names, ("tab:blue", "tab:red"), strict=False)):
        m = domains == d
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=colour, label=name, alpha=0.6)
    ax.legend(markerscale=4, fontsize=9, title="domain")
    ax.set(title=f"{title}: by domain", xticks=[], yticks=[])
    fig.tight_layout()
    figs["tsne_domain.png"] = fig
    return figs
