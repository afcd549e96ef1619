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
