"""The front against the FORA baselines: for each baseline, the front's best schedule at no more MACs, chosen
by the search's own loss and judged on held-out images only (`vs_fora.md`).

The search's own loss (calibration, pooled with confirmation) chooses; held-out figures, once the run has
scored them, stand beside it, and every claim against a baseline is made on them alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import TYPE_CHECKING

from ..frontier import best_within
from ..store import EvaluationRecord
from ..verdict import PairedDifference, paired_difference, verdict_word

if TYPE_CHECKING:
    from ..evaluation import EvaluationSettings
    from .splits import Splits


@dataclass(frozen=True)
class ScoredRecord:
    """A schedule's calibration record, the loss the search decides by (pooled once confirmed), and its
    held-out record once scored."""

    record: EvaluationRecord
    loss: float
    held_out: EvaluationRecord | None = None

    @property
    def held_out_loss(self) -> float | None:
        return None if self.held_out is None else self.held_out.quality_loss


@dataclass(frozen=True)
class BaselineComparison:
    """A heuristic schedule against the front's best schedule that costs no more MACs.

    The front's best is chosen by the search's own loss. When it is a FORA schedule (the baseline itself, or
    FORA-5 at FORA-6's MACs), or when it is not better than the baseline with confidence on the search's own
    images (the selection-bias guard: the best of many near-equal candidates is mostly the luckiest), the
    search has nothing better to offer there: `kept` names the FORA schedule and no claim is made.
    Otherwise the verdict is on held-out images only: the paired difference of held-out losses (baseline −
    rival, per prompt) with its bootstrap interval.
    """

    name: str
    baseline: EvaluationRecord
    baseline_loss: float
    rival: EvaluationRecord | None = None
    rival_loss: float | None = None
    baseline_held_out: EvaluationRecord | None = None
    rival_held_out: EvaluationRecord | None = None
    difference: PairedDifference | None = None
    kept: str | None = None

    @property
    def verdict(self) -> str:
        """The held-out verdict: better, worse or tie; pending before held-out images are scored; FORA kept
        when the front's best at this cost is a FORA schedule or its lead is within noise; "-" when the front
        has nothing this cheap."""
        if self.kept is not None:
            return "FORA kept" if self.rival is None else "FORA kept (lead within noise)"
        if self.rival is None:
            return "-"
        if self.difference is None:
            return "pending"
        return verdict_word(self.difference)

    @property
    def beaten(self) -> bool:
        return self.verdict == "better"


def compare_with_baselines(
    front: list[EvaluationRecord],
    baselines: dict[str, EvaluationRecord],
    loss: Callable[[str], float] | None = None,
    held_out: dict[str, EvaluationRecord] | None = None,
    significantly_better: Callable[[str, str], bool] | None = None,
) -> list[BaselineComparison]:
    """For each baseline, the front's best schedule within its MACs by `loss` (a digest's search loss;
    calibration loss when not given), judged on `held_out` records where both have them.

    The baselines seed the search and may sit on the front themselves. When one of them is the front's best
    at a baseline's cost, or `significantly_better(rival, baseline)` says the rival's lead on the search's
    images is within noise, the search has nothing better to offer there and no claim is made either way.
    """
    search_loss = loss or {r.digest: r.quality_loss for r in [*front, *baselines.values()]}.__getitem__
    held_out = held_out or {}
    names = {b.digest: name for name, b in baselines.items()}
    comparisons = []
    for name, baseline in sorted(baselines.items(), key=lambda item: -item[1].macs):
        best = best_within(front, baseline.macs, cost=attrgetter("macs"), loss=lambda r: search_loss(r.digest))
        comparison = BaselineComparison(
            name, baseline, search_loss(baseline.digest), baseline_held_out=held_out.get(baseline.digest)
        )
        if best is not None and best.digest in names:
            comparison = replace(comparison, kept=names[best.digest])
        elif best is not None:
            ours, theirs = held_out.get(best.digest), comparison.baseline_held_out
            difference = (
                paired_difference(ours.scores["prompt_scores"], theirs.scores["prompt_scores"])
                if ours is not None and theirs is not None
                else None
            )
            noise = significantly_better is not None and not significantly_better(best.digest, baseline.digest)
            comparison = replace(
                comparison,
                rival=best,
                rival_loss=search_loss(best.digest),
                rival_held_out=ours,
                difference=difference,
                kept=name if noise else None,
            )
        comparisons.append(comparison)
    return comparisons


def baseline_table(comparisons: list[BaselineComparison], full_macs: float, splits: Splits | None = None) -> str:
    """Markdown: each baseline beside the front's best schedule at no more MACs, on the search's images and
    on the held-out ones, with the held-out verdict.

    "better by" is the rival's held-out loss reduction relative to the baseline's held-out loss, with its 95%
    interval (paired over prompts): an interval that holds zero is a tie, whatever the point estimate.
    """
    lines = []
    if splits is not None:
        lines += [
            f"Search images: {describe_images(splits.calibration)}"
            + (f", confirmed on {describe_images(splits.confirmation)}" if splits.confirmation else "")
            + f". Held-out images: {describe_images(splits.held_out)}.",
            "",
            "The rival is the front's best schedule at no more MACs by the search's loss. When that is a FORA "
            "schedule, or its lead on the search's images is within noise (the paired guard), the search has "
            "nothing better to offer there: FORA kept, and no claim is made. Otherwise the verdict is on the "
            "held-out images only, paired over prompts.",
            "",
        ]
    lines += [
        "| baseline | MACs | rival MACs | search loss: baseline | rival | held-out loss: baseline | rival "
        "| better by (held out) | 95% CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        cells = ["-"] * 7
        if c.rival is not None:
            cells[:2] = [f"{c.rival.macs / full_macs:.3f}", f"{c.rival_loss:.5f}"]
        elif c.kept is not None:
            cells[:2] = [c.kept, "-"]
        if c.baseline_held_out is not None:
            cells[2] = f"{c.baseline_held_out.quality_loss:.5f}"
        if c.difference is not None and c.baseline_held_out is not None and c.rival_held_out is not None:
            scale = 100 / max(abs(c.baseline_held_out.quality_loss), 1e-12)
            cells[3:6] = [
                f"{c.rival_held_out.quality_loss:.5f}",
                f"{c.difference.mean * scale:.3g} %",
                f"[{c.difference.low * scale:.3g}, {c.difference.high * scale:.3g}] %",
            ]
        cells[-1] = c.verdict
        lines.append(
            f"| {c.name} | {c.baseline.macs / full_macs:.3f} | {cells[0]} | {c.baseline_loss:.5f} | "
            + " | ".join(cells[1:])
            + " |"
        )
    return "\n".join(lines) + "\n"


def describe_images(settings: EvaluationSettings) -> str:
    seeds = settings.images_per_prompt
    return (
        f"{settings.num_images} ({len(settings.prompts)} prompts × {seeds} seed{'s' if seeds > 1 else ''} "
        f"from {settings.seed})"
    )
