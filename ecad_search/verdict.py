"""Verdicts: paired comparisons of two schedules scored on the same images (common random numbers), and the
words every report uses for them.

Both schedules are scored on the same prompts with the same seeds, so their per-prompt scores pair up and
the prompt-to-prompt variation cancels in the difference. The interval comes from a bootstrap over prompts
(the unit that varies between calibration and held-out sets; a prompt's seeds are averaged first): a
difference whose interval contains zero is a tie, not a win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 4000


@dataclass(frozen=True)
class PairedDifference:
    """Mean of `a − b` over paired prompts, with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    prompts: int

    @property
    def verdict(self) -> int:
        """+1 when `a` is larger with confidence, −1 when smaller, 0 when the interval holds zero (a tie)."""
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """The mean of `a[i] − b[i]` and its percentile-bootstrap interval over the pairs (seeded, so repeatable)."""
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape or first.ndim != 1 or first.size == 0:
        raise ValueError(
            f"paired scores must be two equal-length non-empty lists, got {first.shape} and {second.shape}"
        )
    differences = first - second
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, size=(samples, differences.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    mean = float(differences.mean())
    return PairedDifference(mean, min(float(low), mean), max(float(high), mean), int(differences.size))


VERDICT_WORDS = {1: "better", 0: "tie", -1: "worse"}


def verdict_word(difference: PairedDifference) -> str:
    """ "better", "tie" or "worse" for a paired difference taken as the rival's lead (positive: better)."""
    return VERDICT_WORDS[difference.verdict]
