"""Pictures of generated images: sample grids, label-by-noise tables and GAN training curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from runner.viz import plt


def to_grid(images: torch.Tensor, columns: int, pad: int = 2) -> np.ndarray:
    """Images in [0, 1], (N, C, H, W) -> one uint8 (H, W, 3) picture with `columns` per row."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=columns, padding=pad, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def grid_figure(images: torch.Tensor, columns: int, title: str) -> Figure:
    """A grid of samples in [0, 1] with a title, sized so each image stays legible."""
    rows = -(-len(images) // columns)
    fig, ax = plt.subplots(figsize=(1.0 * columns, 1.0 * rows + 0.5), dpi=110)
    ax.imshow(to_grid(images, columns), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def label_rows_figure(images: torch.Tensor, row_names: Sequence[str], title: str) -> Figure:
    """(L, K, C, H, W): row l holds label l's images, column k one noise vector shared down the column."""
    n_rows, n_cols = images.shape[:2]
    fig, ax = plt.subplots(figsize=(1.0 * n_cols + 1.4, 1.0 * n_rows + 0.5), dpi=110)
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
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
