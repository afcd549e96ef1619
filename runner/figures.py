"""Figures a person would rather look at than read: confusion matrices, training curves, t-SNE
maps, and pictures of generated images (sample grids, label-by-noise tables, GAN curves)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.figure import Figure

# Figures are made with matplotlib's object API, never pyplot: no window, no global figure
# registry, nothing to close, and safe to draw in a worker thread beside other work.

if TYPE_CHECKING:
    import torch


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix with counts, true labels down, predictions across."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig = Figure(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=110)
    ax = fig.subplots()
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
    """Per-epoch training losses and their parts (left) and accuracies (right). Schedules and
    other scalars (a learning rate, DANN's lambda) are left out: on a loss axis they read as losses."""
    epochs = np.arange(1, len(history) + 1)
    keys = sorted({k for h in history for k in h})
    losses = [k for k in keys if k.removeprefix("train/").startswith("loss")]
    accs = [k for k in keys if k.endswith("acc") and "/" not in k.removeprefix("train/")]
    fig = Figure(figsize=(9, 3.4), dpi=110)
    (a1, a2) = fig.subplots(1, 2)
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


TSNE_DIMS = 50  # principal components kept before t-SNE: the usual practice, and faster neighbours
TSNE_ITERATIONS = 500  # 250 with early exaggeration, then 250
TSNE_ANGLE = 0.8  # Barnes-Hut's accuracy trade-off (scikit-learn's default 0.5); the same final KL here


def validators_figure(history: Sequence[dict[str, float]], title: str) -> Figure:
    """Each validator's score over the epochs, scaled to its own range (its best epoch 1), above
    target test accuracy, with the epoch each one picks marked: where a validator's peak sits
    against the accuracy curve is its whole story for this run."""
    names = sorted({k.removeprefix("validator/") for h in history for k in h if k.startswith("validator/")})
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for i, name in enumerate(names):
        y = np.array([h.get(f"validator/{name}", np.nan) for h in history], dtype=float)
        if np.all(np.isnan(y)):
            continue
        lo, hi = np.nanmin(y), np.nanmax(y)
        scaled = (y - lo) / (hi - lo) if hi > lo else np.ones_like(y)
        color = f"C{i % 10}"
        top.plot(
            epochs,
            scaled,
            color=color,
            label=name,
            lw=1.6 if name != "oracle" else 2.4,
            ls="--" if name == "oracle" else "-",
        )
        best = int(np.nanargmax(np.where(np.isnan(y), -np.inf, y)[::-1]))  # ties: the later epoch
        top.plot(epochs[len(y) - 1 - best], 1.0, "o", color=color, ms=7)
    top.set(ylabel="score, scaled to its range", title=title, ylim=(-0.05, 1.12))
    top.legend(fontsize=7, ncol=3, loc="center right")
    acc = [100 * h["target_acc"] for h in history if "target_acc" in h]
    bottom.plot(epochs[: len(acc)], acc, color="black", lw=1.8)
    bottom.set(xlabel="epoch", ylabel="target test acc (%)")
    return fig


def tsne_map(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates of `features`: scikit-learn's Barnes-Hut after PCA to 50 dimensions.
    On 2,000 clustered 768-d points and 2 CPU cores: 3.0 s and a final KL divergence of 1.40,
    against 7.5 s and 1.34 for scikit-learn's defaults (1,000 iterations, angle 0.5)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    if x.shape[1] > TSNE_DIMS and len(x) > TSNE_DIMS:
        x = PCA(TSNE_DIMS, random_state=seed).fit_transform(x)
    perplexity = min(30.0, max(5.0, (len(x) - 1) / 4))
    tsne = TSNE(
        n_components=2,
        init="pca",
        perplexity=perplexity,
        max_iter=TSNE_ITERATIONS,
        angle=TSNE_ANGLE,
        random_state=seed,
    )
    return tsne.fit_transform(x)


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
    figs = {}
    xy = tsne_map(features, seed)
    fig = Figure(figsize=(6.4, 6), dpi=110)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for k, name in enumerate(classes):
        m = labels == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(k % cmap.N), label=name, alpha=0.8)
    ax.legend(markerscale=4, fontsize=8, ncol=2, loc="best", title="class")
    ax.set(title=f"{title}: by class", xticks=[], yticks=[])
    fig.tight_layout()
    figs["tsne_class.png"] = fig
    fig = Figure(figsize=(6.4, 6), dpi=110)
    ax = fig.subplots()
    for d, (name, colour) in enumerate(zip(domain_names, ("tab:blue", "tab:red"), strict=False)):
        m = domains == d
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=colour, label=name, alpha=0.6)
    ax.legend(markerscale=4, fontsize=9, title="domain")
    ax.set(title=f"{title}: by domain", xticks=[], yticks=[])
    fig.tight_layout()
    figs["tsne_domain.png"] = fig
    return figs


def to_grid(images: torch.Tensor, columns: int, pad: int = 2) -> np.ndarray:
    """Images in [0, 1], (N, C, H, W) -> one uint8 (H, W, 3) picture with `columns` per row."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=columns, padding=pad, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def grid_figure(images: torch.Tensor, columns: int, title: str) -> Figure:
    """A grid of samples in [0, 1] with a title, sized so each image stays legible."""
    rows = -(-len(images) // columns)
    fig = Figure(figsize=(1.0 * columns, 1.0 * rows + 0.5), dpi=110)
    ax = fig.subplots()
    ax.imshow(to_grid(images, columns), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def label_rows_figure(images: torch.Tensor, row_names: Sequence[str], title: str) -> Figure:
    """(L, K, C, H, W): row l holds label l's images, column k one noise vector shared down the column."""
    n_rows, n_cols = images.shape[:2]
    fig = Figure(figsize=(1.0 * n_cols + 1.4, 1.0 * n_rows + 0.5), dpi=110)
    ax = fig.subplots()
    pad = 2
    ax.imshow(to_grid(images.flatten(0, 1), n_cols, pad), interpolation="nearest")
    cell = images.shape[-2] + pad
    ax.set_yticks([pad + cell * i + images.shape[-2] / 2 for i in range(n_rows)], list(row_names))
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def gan_curves_figure(steps: Sequence[dict[str, float]], title: str, smooth: int = 20) -> Figure:
    """Per-step losses (left), D(x) and D(G(z)) and any accuracies (right), with a moving average."""
    keys = sorted({k for s in steps for k in s})
    losses = [k for k in keys if k.endswith("loss")]
    probs = [k for k in keys if not k.endswith("loss")]
    x = np.arange(1, len(steps) + 1)
    fig = Figure(figsize=(10, 3.6), dpi=110)
    (a1, a2) = fig.subplots(1, 2)
    for ax, group in ((a1, losses), (a2, probs)):
        for k in group:
            y = np.array([s.get(k, np.nan) for s in steps], dtype=float)
            (line,) = ax.plot(x, y, alpha=0.25, linewidth=0.8)
            if len(y) >= smooth:
                avg = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
                ax.plot(x[smooth - 1 :], avg, color=line.get_color(), label=k)
            else:
                line.set_label(k)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    a1.set(xlabel="step", ylabel="loss", title="losses")
    a2.set(xlabel="step", ylabel="value", title="D(x), D(G(z)) and accuracies", ylim=(-0.02, 1.02))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
