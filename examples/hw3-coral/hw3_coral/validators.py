"""A validator of this package's own: the mean entropy of target predictions, negated.

Morerio et al. (ICLR 2018, "Minimal-Entropy Correlation Alignment") choose CORAL's weight by
the target's prediction entropy: it needs no target labels, and a lower entropy is better, so
the score is its negative (hw3's validators are larger-is-better).
"""

from __future__ import annotations

from runner import ValidationData, Validator


class TargetEntropy(Validator):
    name = "entropy"
    description = "mean entropy of target predictions, negated (confident is better)"
    citation = "Morerio et al., ICLR 2018"

    def score(self, data: ValidationData) -> float:
        probs = data.target.logits.float().softmax(1)
        return float((probs * probs.clamp_min(1e-12).log()).sum(1).mean())
