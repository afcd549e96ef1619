"""`hw3 sample`: images from a finished generative run's logged generator."""

from __future__ import annotations

import math
from pathlib import Path

from runner.errors import Hw3Error


def sample_run(run_id: str, n: int, out: str, label: str | None = None, seed: int = 0) -> Path:
    """Draw `n` images (all of class `label` when given) and save them as one grid picture."""
    import mlflow
    import torch
    from PIL import Image

    from runner.gallery import to_grid
    from runner.tracking import Tracker

    path = Path(out).expanduser()
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise Hw3Error(f"--out {out}: give a .png or .jpg file name")
    if not path.parent.is_dir():
        raise Hw3Error(f"--out {out}: folder {path.parent} does not exist; create it first")
    if n < 1:
        raise Hw3Error(f"--n {n}: draw at least one image")
    Tracker().find_run(run_id)  # a clear error for an unknown run
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location="cpu").eval()
    except Exception as exc:
        raise Hw3Error(f"run {run_id}: its model could not be loaded ({str(exc).splitlines()[0]})") from None
    if not hasattr(model, "nz") or not hasattr(model, "noise"):
        raise Hw3Error(f"run {run_id} logged a classifier, not a generator; sample from a gan or acgan run")
    labels = None
    if label is not None:
        labels = torch.full((n,), _label_index(model, label, run_id))
    with torch.no_grad():
        images = model(model.noise(n, seed), labels)
    columns = 8 if n >= 32 else math.ceil(math.sqrt(n))
    Image.fromarray(to_grid(images, columns)).save(path)
    return path


def _label_index(model: object, label: str, run_id: str) -> int:
    classes = list(getattr(model, "classes", ()))
    if not getattr(model, "n_classes", 0):
        raise Hw3Error(f"--label {label}: run {run_id} is an unconditional generator; drop --label")
    if label in classes:
        return classes.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(classes):
        return int(label)
    choices = ", ".join(f"{i} ({c})" for i, c in enumerate(classes))
    raise Hw3Error(f"--label {label}: not a label of run {run_id}; use one of {choices}")
