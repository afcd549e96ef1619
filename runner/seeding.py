"""Random streams: the process-wide generators seeded once per run, and named generators derived
from the run seed, so each consumer (shuffling, augmentation, a GAN's noise) draws its own
stream, and runs of different seeds never share one."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream `name` of run seed `seed`: distinct names and seeds give
    unrelated streams (a hash, not an offset that the next run seed would land on)."""
    digest = hashlib.sha256(f"hw3|{seed}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, name: str, device: Any = "cpu") -> torch.Generator:
    import torch

    return torch.Generator(device=device).manual_seed(derived_seed(seed, name))


def restore_generator(gen: torch.Generator, state: torch.Tensor) -> None:
    """Put a checkpointed generator state back. A run resumed on another kind of device (its
    generators keep states of another shape) gets a stream seeded from the saved state instead:
    the resumed steps do not repeat the first ones' draws (the arithmetic differs there anyway)."""
    if state.numel() == gen.get_state().numel():
        gen.set_state(state)
        return
    digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def rng_state() -> dict[str, Any]:
    """The process-wide generators' state, in types a `weights_only` checkpoint load accepts."""
    import numpy as np
    import torch

    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the legacy form is the 5-tuple; the other is a dict
    kind, keys, pos, has_gauss, gauss = legacy
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
