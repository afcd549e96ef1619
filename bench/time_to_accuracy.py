"""Time to a target accuracy: hw3's default DANN against a plain public-style DANN loop, side by side.

The plain loop is written here to the recipe of a widely used public PyTorch DANN (2019): 28-px
images normalised to [-1, 1], a 64/50-channel convolutional extractor with batch norm and
channel dropout, a 100-100 label head with dropout, a 100-unit domain head, Adam 1e-3, batch
128, the paper's lambda ramp, no augmentation, images turned into tensors one sample at a time
through PIL as a torchvision Dataset does. Both train on the same embedded mnist:mnistm training
images (the 90% hw3 trains on; the validation tenth is held out of both) and are tested on the
same 1,000 MNIST-M test images after every epoch. Reported: the wall time from the start of each
(hw3: `execute`, so its set-up counts) to the end of the first epoch whose target test accuracy
reaches the threshold; test accuracy is only read here, never used to choose a setting.

    python bench/time_to_accuracy.py                   # both, threshold 0.89, seed 0 (~6 min)
    python bench/time_to_accuracy.py --skip-plain      # hw3 only
"""

from __future__ import annotations

import argparse
import io
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from torch import nn

from runner import hookimpl
from runner.adapt import grad_reverse
from runner.runs.execute import execute
from runner.runs.plan import RunRequest, make_plan
from runner.runs.plugins import get_manager, registered
from runner.runs.prepare import load_domains


class EpochClock:
    """Records (seconds since start, target test accuracy) at the end of every epoch of a run."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.points: list[tuple[float, float]] = []

    @hookimpl
    def hw3_epoch_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.points.append((time.perf_counter() - self.t0, metrics["target_acc"]))


def first_reaching(points: list[tuple[float, float]], threshold: float) -> tuple[int, float] | None:
    for epoch, (seconds, acc) in enumerate(points, start=1):
        if acc >= threshold:
            return epoch, seconds
    return None


def hw3_dann(seed: int, epochs: int) -> list[tuple[float, float]]:
    clock = EpochClock()
    with registered(clock, name="epoch-clock"):
        execute(
            RunRequest("dann", overrides=[("seed", seed), ("epochs", epochs), ("tsne_points", 0)]),
            Console(file=io.StringIO()),
        )
    return clock.points


class PerSample(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images served one at a time through PIL, as an image-folder Dataset would."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i])
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - 0.5) / 0.5, int(self.labels[i])


class PlainDann(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 5), nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(64, 50, 5), nn.BatchNorm2d(50), nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        self.label = nn.Sequential(
            nn.Linear(800, 100), nn.BatchNorm1d(100), nn.ReLU(), nn.Dropout(),
            nn.Linear(100, 100), nn.BatchNorm1d(100), nn.ReLU(), nn.Linear(100, 10),
        )  # fmt: skip
        self.domain = nn.Sequential(nn.Linear(800, 100), nn.BatchNorm1d(100), nn.ReLU(), nn.Linear(100, 2))

    def forward(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.label(f), self.domain(grad_reverse(f, lam))


def three_channels(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def plain_dann(seed: int, epochs: int, threshold: float) -> list[tuple[float, float]]:
    manager = get_manager()
    resolved = make_plan(RunRequest("dann", overrides=[("seed", seed)]), manager).resolved
    domains = load_domains(resolved, manager, None, torch.device("cpu"))
    src, tgt, test = domains["source"].train, domains["target"].train, domains["target"].test
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    loaders = [
        torch.utils.data.DataLoader(PerSample(three_channels(s.images), s.labels), batch_size=128, shuffle=True)
        for s in (src, tgt)
    ]
    test_x = (three_channels(test.images).float() / 255.0 - 0.5) / 0.5
    net = PlainDann()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = min(len(loader) for loader in loaders)
    points: list[tuple[float, float]] = []
    for epoch in range(epochs):
        net.train()
        for i, ((xs, ys), (xt, _)) in enumerate(zip(*loaders, strict=False)):  # the shorter domain ends the epoch
            p = (epoch * steps + i) / (epochs * steps)
            lam = 2.0 / (1.0 + math.exp(-10 * p)) - 1
            cls_s, dom_s = net(xs, lam)
            _, dom_t = net(xt, lam)
            loss = (
                F.cross_entropy(cls_s, ys)
                + F.cross_entropy(dom_s, torch.zeros(len(xs), dtype=torch.long))
                + F.cross_entropy(dom_t, torch.ones(len(xt), dtype=torch.long))
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = (net(test_x, 0.0)[0].argmax(1) == test.labels).float().mean().item()
        points.append((time.perf_counter() - t0, acc))
        print(f"  plain DANN epoch {epoch + 1}: target {100 * acc:.1f}%  {points[-1][0]:.0f} s", flush=True)
        if acc >= threshold:
            break
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=0.89)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="hw3's epochs (its default)")
    parser.add_argument("--plain-epochs", type=int, default=50, help="the plain loop's limit")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    rows = [("hw3 dann (defaults)", hw3_dann(args.seed, args.epochs))]
    if not args.skip_plain:
        rows.append(("plain public-style DANN", plain_dann(args.seed, args.plain_epochs, args.threshold)))
    print(f"\ntime to {100 * args.threshold:.0f}% target test accuracy, mnist:mnistm, seed {args.seed}")
    reached = {}
    for name, points in rows:
        hit = first_reaching(points, args.threshold)
        reached[name] = hit[1] if hit else None
        best = max(acc for _, acc in points)
        where = f"epoch {hit[0]}, {hit[1]:6.1f} s" if hit else f"not reached in {len(points)} epochs"
        print(f"{name:26s} {where:28s} (best {100 * best:.1f}%, last {100 * points[-1][1]:.1f}%)")
    if len(rows) == 2 and all(reached.values()):
        hw3, plain = reached[rows[0][0]], reached[rows[1][0]]
        print(f"hw3 takes {hw3 / plain:.2f}x the plain loop's time")  # type: ignore[operator]


if __name__ == "__main__":
    main()
