"""Verdicts: paired comparisons of two schedules scored on the same images (common random numbers), and the
one rule every claim is judged by (vs_fora, compare, `--budget`, the README).

Both schedules are scored on the same prompts with the same seeds, so their scores pair up and the
prompt-to-prompt variation cancels in the difference. The interval comes from a bootstrap over the pairs
(prompts for per-prompt metrics, seeds for set metrics, images for per-image families): a difference whose
interval contains zero is a tie, not a win.

A claim (`Claim`) holds in every family at once (`families`): better in the primary family with the interval
clear of zero, and non-inferior in the others within stated margins (`Margins`); better in one and behind in
another is a trade-off, and is called one. Differences are absolute, in the family's units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import FieldError
from .families import FAMILIES_KEY, FAMILY_ORDER, QUALITY, SECOND_JUDGE

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


@dataclass(frozen=True)
class Margins:
    """How far a rival may fall behind in each family that is not the claim's primary one and still count as
    no worse (non-inferiority): quality in the metric's loss units (None: the metric's own default), fidelity
    in dB of PSNR, adherence in points."""

    quality: float | None = None
    fidelity: float = 1.0
    adherence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("quality", "fidelity", "adherence"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise FieldError(f"`margin` {name}={value!r} must be a number ≥ 0")

    def of(self, family: str, quality_default: float) -> float:
        value = getattr(self, family)
        return quality_default if value is None else float(value)


MARGIN_FAMILIES = ("quality", "fidelity", "adherence")


def claim_margins(given: Sequence[tuple[str, float]] = ()) -> Margins:
    """Margins from (family, value) pairs (the command line's `--margin fidelity=1`), the rest at defaults."""
    values: dict[str, float] = {}
    for family, value in given:
        if family not in MARGIN_FAMILIES:
            raise FieldError(f"unknown `margin` family '{family}': use one of {', '.join(MARGIN_FAMILIES)}")
        values[family] = value
    return Margins(**values)


@dataclass(frozen=True)
class FamilyDifference:
    """One family's paired difference, rival − baseline, oriented so that positive favours the rival."""

    family: str
    unit: str
    difference: PairedDifference
    margin: float

    @property
    def non_inferior(self) -> bool:
        return self.difference.low >= -self.margin

    @property
    def non_superior(self) -> bool:
        return self.difference.high <= self.margin

    def text(self) -> str:
        d, unit = self.difference, f" {self.unit}" if self.unit else ""
        return f"{d.mean:+.3g}{unit} [{d.low:+.3g}, {d.high:+.3g}]"


@dataclass(frozen=True)
class Claim:
    """A rival against a baseline in every family, judged by one rule.

    - better: the primary family's paired 95 % interval lies above zero and every other family is
      non-inferior (its interval's lower end is no more than its margin below zero);
    - worse: the same with rival and baseline swapped;
    - tie: the primary interval holds zero and every other family is within its margin both ways;
    - trade-off: anything else (better in one family, behind in another), shown with its figures.
    """

    primary: FamilyDifference
    others: tuple[FamilyDifference, ...]

    @property
    def verdict(self) -> str:
        lead = self.primary.difference.verdict
        if lead > 0 and all(other.non_inferior for other in self.others):
            return "better"
        if lead < 0 and all(other.non_superior for other in self.others):
            return "worse"
        if lead == 0 and all(other.non_inferior and other.non_superior for other in self.others):
            return "tie"
        return "trade-off"

    def behind(self) -> list[str]:
        """The families in which the rival is not shown non-inferior."""
        return [f.family for f in (self.primary, *self.others) if not f.non_inferior]


def judge_claim(
    rival: dict[str, Sequence[float]],
    baseline: dict[str, Sequence[float]],
    families: Sequence[tuple[str, str, str]],
    primary: str,
    margins: Margins,
    quality_margin: float,
) -> Claim | None:
    """The claim of `rival` over `baseline` from their paired per-unit figures (`families` names each one as
    (family, key, unit)); None when either lacks the primary family's figures. Families either lacks are
    left out of the claim."""
    found = []
    for family, key, unit in families:
        a, b = rival.get(key), baseline.get(key)
        if not a or not b or len(a) != len(b):
            continue
        margin = 0.0 if family == primary else margins.of(family, quality_margin)
        found.append(FamilyDifference(family, unit, paired_difference(a, b), margin))
    lead = next((f for f in found if f.family == primary), None)
    if lead is None:
        return None
    return Claim(lead, tuple(f for f in found if f is not lead))


def rule_text(margins: Margins, quality_margin: float, quality_unit: str = "") -> str:
    """The verdict rule and its margins, printed with every table of verdicts."""
    unit = f" {quality_unit}" if quality_unit else ""
    return (
        "Verdicts: better = the primary family's paired 95 % interval is above zero and every other family is "
        "non-inferior (interval's lower end no more than its margin below zero); worse = the same, reversed; "
        "tie = the primary interval holds zero and every other family is within its margin; trade-off = "
        f"anything else. Margins: quality {margins.of('quality', quality_margin):g}{unit}, fidelity "
        f"{margins.fidelity:g} dB PSNR, adherence {margins.adherence:g} points."
    )


@dataclass(frozen=True)
class ClaimRules:
    """What a claim is judged in: the primary family (what the search minimised: quality or fidelity), the
    margins of the others, and the quality metric's own margin and unit."""

    primary: str = "quality"
    margins: Margins = field(default_factory=Margins)
    quality_margin: float = 0.005
    quality_unit: str = ""

    def families(self) -> list[tuple[str, str, str]]:
        return [(f.name, f.key, self.quality_unit if f is QUALITY else f.unit) for f in FAMILY_ORDER]

    def judge(self, rival: dict[str, Any], baseline: dict[str, Any]) -> Claim | None:
        """The claim of one scored candidate over another, from their stored scores (`scores["families"]`)."""
        ours, theirs = rival.get(FAMILIES_KEY, {}), baseline.get(FAMILIES_KEY, {})
        return judge_claim(ours, theirs, self.families(), self.primary, self.margins, self.quality_margin)

    def second_judge(self, rival: dict[str, Any], baseline: dict[str, Any]) -> PairedDifference | None:
        """The quality lead in the second judge's features (digits), where both have them."""
        ours, theirs = SECOND_JUDGE.values(rival), SECOND_JUDGE.values(baseline)
        return paired_difference(ours, theirs) if ours and theirs and len(ours) == len(theirs) else None

    def text(self) -> str:
        return rule_text(self.margins, self.quality_margin, self.quality_unit)
