"""Checkpoints: everything needed to continue a run exactly where it stopped."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner.data import atomic_save
from runner.errors import Hw3Error


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def save(path: Path, state: dict[str, Any]) -> None:
    atomic_save(state, path)


def load(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise Hw3Error(f"checkpoint {path} does not exist; it was moved or deleted, so the run cannot resume")
    # Our own file: it holds numpy RNG state and plain Python objects, not only tensors.
    return torch.load(path, map_location="cpu", weights_only=False)
