"""Which epoch's metrics a result reports, said out loud.

Most adaptation code quietly keeps the epoch with the best target *test* accuracy, which uses
the labels adaptation is not supposed to have. hw3 reports the last epoch as the headline and
logs, for every validator (`runner.validator`), the epoch it would choose: each validator's score
is computed on the validation splits (held out of the training splits, never trained on), and
only the oracle reads target labels (a tuning upper bound). Test accuracy is only ever reported,
never used to choose.
"""

from __future__ import annotations

from collections.abc import Sequence

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
