"""Which epoch's metrics a result reports, said out loud.

Most adaptation code quietly keeps the epoch with the best target *test* accuracy, which uses
the labels adaptation is not supposed to have. hw3 reports the last epoch as the headline and
logs, for every validator (`runner.validator`), the epoch it would choose: each validator's score
is computed on the validation splits (held out of the training splits, never trained on), and
only the oracle reads target labels (a tuning upper bound). Test accuracy is only ever reported,
never used to choose.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

LAST = "last"
LAST_HELP = "the last epoch"
PREFIX = "validator/"


def validator_names(history: Sequence[dict[str, float]]) -> list[str]:
    """The validators a history holds scores of, in the order they were logged."""
    names: dict[str, None] = {}
    for h in history:
        names.update((k[len(PREFIX) :], None) for k in h if k.startswith(PREFIX))
    return list(names)


def select(history: Sequence[dict[str, float]], metric: str = "target_acc") -> dict[str, float]:
    """`selected/<protocol>/<metric>`, `/epoch` (1-based) and `/score` for `last` and every
    validator the history holds; ties go to the later epoch, and a score that is not a number
    never wins."""
    if not history or metric not in history[-1]:
        return {}
    out = {f"selected/{LAST}/epoch": float(len(history)), f"selected/{LAST}/{metric}": history[-1][metric]}
    for name in validator_names(history):
        key = PREFIX + name
        scored = [(h[key], i) for i, h in enumerate(history) if key in h and metric in h and h[key] == h[key]]
        if not scored:
            continue
        score, best = max(scored)
        out[f"selected/{name}/epoch"] = float(best + 1)
        out[f"selected/{name}/score"] = score
        out[f"selected/{name}/{metric}"] = history[best][metric]
    return out


def select_scored(
    history: Sequence[dict[str, float]],
    name: str,
    epochs: Sequence[int],
    scores: Sequence[float],
    metric: str = "target_acc",
) -> dict[str, float]:
    """`selected/<name>/...` from scores of the 1-based `epochs` computed together (a study-level
    validator over a run's epochs), with `select`'s rules: ties go to the later epoch, and a score
    that is not a number never wins."""
    scored = [
        (s, e)
        for e, s in zip(epochs, scores, strict=True)
        if s == s and 0 < e <= len(history) and metric in history[e - 1]
    ]
    if not scored:
        return {}
    score, best = max(scored)
    return {
        f"selected/{name}/epoch": float(best),
        f"selected/{name}/score": float(score),
        f"selected/{name}/{metric}": history[best - 1][metric],
    }


# -- the target validation predictions a run saves (record.TARGET_VAL_PREDICTIONS) ---------------
@dataclass(frozen=True)
class Predictions:
    """A run's softmax predictions of the target validation split at each evaluated epoch: what a
    study-level validator ensembles. `images` fingerprints the images they are predictions of, so
    that only predictions of the same images are ever compared."""

    epochs: list[int]  # 1-based, one per row of `probs`
    probs: np.ndarray  # (epochs, N, classes), float16
    images: str

    def last(self) -> np.ndarray:
        """The last evaluated epoch's (N, classes) probabilities, as float32."""
        import numpy as np

        return self.probs[-1].astype(np.float32)


def images_fingerprint(images: torch.Tensor) -> str:
    """A short digest of a split's uint8 images (shape and bytes)."""
    import hashlib

    x = images.detach().cpu().contiguous()
    digest = hashlib.sha1(repr(tuple(x.shape)).encode())
    digest.update(x.numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_predictions(p: Predictions) -> bytes:
    """The artifact's bytes: a compressed .npz of `epochs`, `probs` (float16) and `images`."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        epochs=np.asarray(p.epochs, dtype=np.int32),
        probs=np.asarray(p.probs, np.float16),
        images=np.str_(p.images),
    )
    return buf.getvalue()


def decode_predictions(data: bytes) -> Predictions:
    """`encode_predictions` read back (no pickles: the store's files run no code)."""
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return Predictions([int(e) for e in z["epochs"]], z["probs"], str(z["images"]))
