"""`hw3 sample`: images from a finished generative run's logged generator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from runner.errors import Hw3Error


@runtime_checkable
class ImageSampler(Protocol):
    """What `hw3 sample` needs of a run's logged model (`runner.generate.Sampler` has it): noise
    of length `nz` (and, when `n_classes`, labels among `classes`) -> images in [0, 1]."""

    nz: int
    n_classes: int
    classes: tuple[str, ...]

    def noise(self, n: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor: ...

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor: ...


def sample_run(run_id: str, n: int, out: str, label: str | None = None, seed: int = 0) -> Path:
    """Draw `n` images (all of class `label` when given) and save them as one grid picture."""
    from PIL import Image

    from runner.figures import to_grid
    from runner.tracking import Tracker

    path = Path(out).expanduser()
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise Hw3Error(f"--out {out}: give a .png or .jpg file name")
    if not path.parent.is_dir():
        raise Hw3Error(f"--out {out}: folder {path.parent} does not exist; create it first")
    if n < 1:
        raise Hw3Error(f"--n {n}: draw at least one image")
    from runner.generate.networks import Sampler

    model = Tracker().load_model(run_id, Sampler.from_spec)
    if not isinstance(model, ImageSampler):
        raise Hw3Error(f"run {run_id} logged a classifier, not a generator; sample from a gan or acgan run")
    labels = None
    if label is not None:
        labels = torch.full((n,), _label_index(model, label, run_id))
    with torch.no_grad():
        images = model(model.noise(n, seed), labels)
    columns = 8 if n >= 32 else math.ceil(math.sqrt(n))
    Image.fromarray(to_grid(images, columns)).save(path)
    return path


def _label_index(model: ImageSampler, label: str, run_id: str) -> int:
    classes = list(model.classes)
    if not model.n_classes:
        raise Hw3Error(f"--label {label}: run {run_id} is an unconditional generator; drop --label")
    if label in classes:
        return classes.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(classes):
        return int(label)
    choices = ", ".join(f"{i} ({c})" for i, c in enumerate(classes))
    raise Hw3Error(f"--label {label}: not a label of run {run_id}; use one of {choices}")
