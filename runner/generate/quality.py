"""Offline sample-quality metrics for generative runs: Fréchet distance, KID, label accuracy.

Inception features need weights this machine may not have, so the default feature space is a
small classifier trained on the real data of the run's dataset (once; cached by the data's
hash). Its test accuracy is logged with the metrics, because features of a poor classifier make
a poor distance. Inception FID is added only when the user names a weights file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runner.batches import to_network_range
from runner.cache import atomic_save
from runner.datasets import Split
from runner.errors import Hw3Error

RECIPE = "4"  # bump when the evaluator's architecture or training changes, so caches are rebuilt


MIN_STEPS = 300


class EvalNet(nn.Module):
    """A compact CNN for any size from 28 px: 128 globally pooled features, then a linear head.

    Small on purpose: it is trained once per dataset on the CPU in seconds, and 128 features keep
    the covariance in the Fréchet distance well estimated from a few thousand images.
    """

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(channels, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _digest(*splits: Split) -> str:
    h = hashlib.sha1(RECIPE.encode())
    for s in splits:
        h.update(str(tuple(s.images.shape)).encode())
        h.update(s.images.cpu().contiguous().numpy().tobytes())
        h.update(s.labels.cpu().numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def evaluator(
    train: Split, test: Split, n_classes: int, cache_dir: Path, device: torch.device, epochs: int = 10, seed: int = 0
) -> tuple[EvalNet, float]:
    """The feature network for `train`'s data and its test accuracy, trained once and cached."""
    path = Path(cache_dir) / "evaluators" / f"{_digest(train, test)}.pt"
    with torch.random.fork_rng(devices=[]):  # building or loading it leaves the run's random streams untouched
        torch.manual_seed(seed)
        net = EvalNet(train.images.shape[1], n_classes).to(device)
        acc = _load(net, path)
        if acc is None:
            _train(net, train, device, epochs, seed)
            acc = label_accuracy(net.eval(), to_network_range(test.images), test.labels, device)
            atomic_save({"state": {k: v.cpu() for k, v in net.state_dict().items()}, "test_acc": acc}, path)
    return net.eval(), acc


def _load(net: EvalNet, path: Path) -> float | None:
    """The cached weights into `net` and their test accuracy, or None when there are none."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state"])
        return float(saved["test_acc"])
    except Exception:
        path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, not trusted
        return None


def _train(net: EvalNet, train: Split, device: torch.device, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=4e-3, weight_decay=1e-4)
    per_epoch = -(-len(train) // 128)
    # A small subset still gets a trained net (up to 40 passes), without hundreds of passes over a tiny one.
    steps = max(epochs * (len(train) // 128), min(MIN_STEPS, 40 * per_epoch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    net.train()
    step = 0
    while step < steps:
        for idx in torch.randperm(len(train), generator=gen).split(128):
            if step >= steps:
                break
            if len(idx) < 2:  # batch norm needs two images
                continue
            x = to_network_range(train.images[idx.to(train.images.device)].to(device))
            loss = nn.functional.cross_entropy(net(x), train.labels[idx.to(train.labels.device)].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1


@torch.no_grad()
def _map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device, batch: int = 500):
    return torch.cat([fn(part.to(device)).float().cpu() for part in x.split(batch)])


def features(net: EvalNet, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """Penultimate features of images in [-1, 1], as float64 for the statistics."""
    return _map(net.features, images, device).double().numpy()


def label_accuracy(net: EvalNet, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    pred = _map(net, images, device).argmax(1)
    return float((pred == labels.cpu()).float().mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((C_a C_b)^(1/2)) is the sum of the square roots of C_a C_b's eigenvalues, which are real
    # and non-negative for two covariance matrices; rounding can make tiny ones negative.
    eig = np.linalg.eigvals(ca @ cb).real.clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(eig).sum())


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 50, size: int = 1000, seed: int = 0) -> float:
    """KID (Bińkowski et al. 2018): the unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3,
    averaged over random subsets of `size` points from each set."""
    rng = np.random.default_rng(seed)
    m = min(size, len(a), len(b))
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values))


def inception_net(weights: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchvision's Inception v3 from a local weights file, as images in [-1, 1] -> 2048 features."""
    from torchvision.models import inception_v3

    path = Path(weights).expanduser()
    if not path.is_file():
        raise Hw3Error(
            f"inception_weights: {path} is not a file; point it at torchvision's inception_v3_google-*.pth "
            "(hw3 never downloads it), or leave the setting empty"
        )
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Hw3Error(f"inception_weights: {path} is not torchvision Inception v3 weights ({first[:160]})") from None
    net.fc = nn.Identity()
    net = net.to(device).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # The Google weights expect inputs in [-1, 1] at 299 px (what transform_input produces).
        return net(nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))

    return forward


def inception_features(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: Any):
    return _map(forward, images, device, batch=50).double().numpy()
