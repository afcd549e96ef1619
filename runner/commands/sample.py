"""`hw3 sample`: images from a finished generative run's logged generator."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from runner.errors import Hw3Error
from runner.generate.sampling import ImageSampler


def sample_run(run_id: str, n: int, out: str, label: str | None = None, seed: int = 0) -> Path:
    """Draw `n` images (all of class `label` when given) and save them as one grid picture."""
    from PIL import Image

    from runner.figures import to_grid
    from runner.store import reader

    path = Path(out).expanduser()
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise Hw3Error(f"--out {out}: give a .png or .jpg file name")
    if not path.parent.is_dir():
        raise Hw3Error(f"--out {out}: folder {path.parent} does not exist; create it first")
    if n < 1:
        raise Hw3Error(f"--n {n}: draw at least one image")
    from runner.generate.networks import Sampler

    model = reader().load_model(run_id, Sampler.from_spec)
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
