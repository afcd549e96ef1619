"""Which epoch's metrics a result reports, said out loud.

Most adaptation code quietly keeps the epoch with the best target *test* accuracy, which uses
the labels adaptation is not supposed to have. hw3 reports the last epoch as the headline and
logs, each labelled, the epochs chosen on the validation splits (held out of the training
splits, never trained on): by source validation accuracy, by an unsupervised validator on
held-out target images (information maximization), and by target validation accuracy (which
uses target labels: a tuning upper bound). Test accuracy is only ever reported, never used to choose.
"""

from __future__ import annotations

from collections.abc import Sequence

PROTOCOLS = {
    "last": "the last epoch",
    "source_val": "best source validation accuracy (labelled source data only)",
    "im": "best information-maximization score on held-out target images (no labels)",
    "target_val": "best target validation accuracy (uses target labels: a tuning upper bound, not a result)",
}
_KEYS = {"source_val": "source_val_acc", "im": "target_im", "target_val": "target_val_acc"}


def select(history: Sequence[dict[str, float]], metric: str = "target_acc") -> dict[str, float]:
    """`selected/<protocol>/<metric>` and `selected/<protocol>/epoch` for every protocol the
    history supports (1-based epochs; ties go to the later epoch)."""
    if not history or metric not in history[-1]:
        return {}
    out = {"selected/last/epoch": float(len(history)), f"selected/last/{metric}": history[-1][metric]}
    for protocol, key in _KEYS.items():
        scored = [(h[key], i) for i, h in enumerate(history) if key in h and metric in h]
        if not scored:
            continue
        _, best = max(scored)
        out[f"selected/{protocol}/epoch"] = float(best + 1)
        out[f"selected/{protocol}/{metric}"] = history[best][metric]
    return out
