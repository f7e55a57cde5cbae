"""The front against its baselines (FORA every N steps, and the uncached pipeline at fewer steps): for each
baseline, the front's best schedule at no more MACs, chosen by the search's own loss and judged on held-out
images only, in every family (`vs_fora.md`). Beside each claim stands the uncached model's own claim against
the same baseline, by the same rule: where the uncached model is not "better", no schedule that reproduces its
images can be, so a trade-off there is the rule's ceiling, not the schedule's shortfall.

The search's own loss (calibration, pooled with confirmation) chooses; held-out figures, once the run has
scored them, stand beside it, and every claim against a baseline is made on them alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import TYPE_CHECKING

from ..families import ADHERENCE, FIDELITY, QUALITY, SECOND_JUDGE, SSIM, mean
from ..frontier import best_within
from ..store import EvaluationRecord
from ..verdict import Claim, ClaimRules, PairedDifference

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
    """A baseline (FORA, or fewer steps) against the front's best schedule that costs no more MACs.

    The front's best is chosen by the search's own loss. When it is a FORA schedule (the baseline itself, or
    FORA-5 at FORA-6's MACs), or when it is not better than the baseline with confidence on the search's own
    images (the selection-bias guard: the best of many near-equal candidates is mostly the luckiest), the
    search has nothing better to offer there: `kept` names the FORA schedule and no claim is made.
    Otherwise the claim is judged on held-out images only, in every family (`ClaimRules`). `ceiling` is the
    uncached model's claim against the same baseline on the same images.
    """

    name: str
    baseline: EvaluationRecord
    baseline_loss: float
    rival: EvaluationRecord | None = None
    rival_loss: float | None = None
    baseline_held_out: EvaluationRecord | None = None
    rival_held_out: EvaluationRecord | None = None
    claim: Claim | None = None
    second_judge: PairedDifference | None = None
    kept: str | None = None
    ceiling: Claim | None = None

    @property
    def verdict(self) -> str:
        """The held-out verdict (better, worse, tie, trade-off); pending before held-out images are scored;
        FORA kept when the front's best at this cost is a FORA schedule or its lead is within noise; "-" when
        the front has nothing this cheap."""
        if self.kept is not None:
            return "FORA kept" if self.rival is None else "FORA kept (lead within noise)"
        if self.rival is None:
            return "-"
        if self.claim is None:
            return "pending"
        return self.claim.verdict

    @property
    def beaten(self) -> bool:
        return self.verdict == "better"

    @property
    def second_judge_agrees(self) -> bool | None:
        """Whether the second judge sees the quality lead the search's features see (None: nothing to compare).
        A claim whose quality win holds only in the features the search tuned on is flagged by False."""
        if self.claim is None or self.second_judge is None:
            return None
        quality = next((f for f in (self.claim.primary, *self.claim.others) if f.family == "quality"), None)
        return None if quality is None else quality.difference.verdict == self.second_judge.verdict


def compare_with_baselines(
    front: list[EvaluationRecord],
    baselines: dict[str, EvaluationRecord],
    loss: Callable[[str], float] | None = None,
    held_out: dict[str, EvaluationRecord] | None = None,
    significantly_better: Callable[[str, str], bool] | None = None,
    rules: ClaimRules | None = None,
    kept_names: set[str] | None = None,
    uncached: EvaluationRecord | None = None,
) -> list[BaselineComparison]:
    """For each baseline, the front's best schedule within its MACs by `loss` (a digest's search loss;
    calibration loss when not given), judged on `held_out` records where both have them.

    The FORA baselines (`kept_names`, all of them when not given) seed the search and may sit on the front
    themselves. When one of them is the front's best at a baseline's cost, or `significantly_better(rival,
    baseline)` says the rival's lead on the search's images is within noise, the search has nothing better
    to offer there and no claim is made either way. `uncached`, the uncached model's held-out record, is
    judged against every baseline by the same rule (`ceiling`).
    """
    search_loss = loss or {r.digest: r.quality_loss for r in [*front, *baselines.values()]}.__getitem__
    held_out = held_out or {}
    rules = rules or ClaimRules()
    kept_names = set(baselines) if kept_names is None else kept_names
    names = {b.digest: name for name, b in baselines.items() if name in kept_names}
    comparisons = []
    for name, baseline in sorted(baselines.items(), key=lambda item: (-item[1].macs, item[0])):
        best = best_within(front, baseline.macs, cost=attrgetter("macs"), loss=lambda r: search_loss(r.digest))
        theirs = held_out.get(baseline.digest)
        ceiling = rules.judge(uncached.scores, theirs.scores) if uncached is not None and theirs is not None else None
        comparison = BaselineComparison(
            name, baseline, search_loss(baseline.digest), baseline_held_out=theirs, ceiling=ceiling
        )
        if best is not None and best.digest in names and name in kept_names:
            comparison = replace(comparison, kept=names[best.digest])
        elif best is not None:
            ours = held_out.get(best.digest)
            both = ours is not None and theirs is not None
            noise = significantly_better is not None and not significantly_better(best.digest, baseline.digest)
            comparison = replace(
                comparison,
                rival=best,
                rival_loss=search_loss(best.digest),
                rival_held_out=ours,
                claim=rules.judge(ours.scores, theirs.scores) if both else None,
                second_judge=rules.second_judge(ours.scores, theirs.scores) if both else None,
                kept=name if noise and name in kept_names else None,
            )
        comparisons.append(comparison)
    return comparisons


def verdict_lines(comparisons: list[BaselineComparison]) -> list[str]:
    """The verdicts in a line, and what the same rule says of the uncached model itself (the most a schedule
    that reproduces its images can claim), once held-out images are scored."""
    labels = ("better", "trade-off", "tie", "worse", "FORA kept")
    verdicts = {label: [c.name for c in comparisons if c.verdict.startswith(label)] for label in labels}
    lines = [
        f"vs {len(comparisons)} baselines at ≤ MACs: better {len(verdicts['better'])}"
        + (f" ({', '.join(verdicts['better'])})" if verdicts["better"] else "")
        + f" · trade-off {len(verdicts['trade-off'])} · tie {len(verdicts['tie'])} · worse "
        f"{len(verdicts['worse'])} · FORA kept {len(verdicts['FORA kept'])}"
    ]
    ceilings = Counter(c.ceiling.verdict for c in comparisons if c.ceiling is not None)
    if ceilings:
        tally = " · ".join(f"{verdict} {count}" for verdict, count in sorted(ceilings.items()))
        lines.append(f"the uncached model itself, by the same rule: {tally}")
    return lines


def baseline_table(
    comparisons: list[BaselineComparison],
    full_macs: float,
    splits: Splits | None = None,
    rules: ClaimRules | None = None,
) -> str:
    """Markdown: every baseline's and rival's held-out figures in each family, then each claim's paired
    differences (rival − baseline, positive favours the rival, 95 % intervals) with its verdict."""
    rules = rules or ClaimRules()
    lines = []
    if splits is not None:
        lines += [
            f"Search images: {describe_images(splits.calibration)}"
            + (f", confirmed on {describe_images(splits.confirmation)}" if splits.confirmation else "")
            + f". Held-out images: {describe_images(splits.held_out)}.",
            "",
            "The rival is the front's best schedule at no more MACs by the search's loss. When that is a FORA "
            "schedule, or its lead on the search's images is within noise (the paired guard), the search has "
            "nothing better to offer there: FORA kept, and no claim is made. Otherwise the claim is judged on "
            f"the held-out images only, in every family; the primary family is {rules.primary}. The last "
            "column judges the uncached model itself against each baseline by the same rule: where it is not "
            "better, no schedule that reproduces the uncached images can be.",
            "",
            rules.text(),
            "",
        ]
    lines += [*_figures_table(comparisons, full_macs, rules), "", *_claims_table(comparisons, full_macs)]
    return "\n".join(lines) + "\n"


def _figures_table(comparisons: list[BaselineComparison], full_macs: float, rules: ClaimRules) -> list[str]:
    unit = f" ({rules.quality_unit})" if rules.quality_unit else ""
    rows = [
        "Held-out figures (means):",
        "",
        f"| schedule | MACs | search loss | quality loss{unit} ↓ | PSNR dB ↑ | SSIM ↑ | adherence % ↑ "
        "| second judge loss ↓ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baselines = {c.baseline.digest for c in comparisons}
    rivals: dict[str, list[BaselineComparison]] = {}
    for c in comparisons:
        if c.rival is not None and c.rival.digest not in baselines:
            rivals.setdefault(c.rival.digest, []).append(c)
    entries = [(c.name, c.baseline, c.baseline_loss, c.baseline_held_out) for c in comparisons]
    for versus in rivals.values():
        first = versus[0]
        label = "front, vs " + ", ".join(c.name for c in versus)
        entries.append((label, first.rival, first.rival_loss, first.rival_held_out))
    for label, record, search_loss, held in entries:
        cells = ["-"] * 5 if held is None else _held_out_cells(held)
        rows.append(f"| {label} | {record.macs / full_macs:.3f} | {search_loss:.5f} | " + " | ".join(cells) + " |")
    return rows


def _held_out_cells(record: EvaluationRecord) -> list[str]:
    """The held-out means of every family (quality as its loss, whatever the search minimised)."""
    quality, second = mean(QUALITY.values(record.scores)), mean(SECOND_JUDGE.values(record.scores))
    return [
        f"{record.quality_loss if quality is None else 1 - quality:.5f}",
        _mean_text(FIDELITY.values(record.scores), ".2f"),
        _mean_text(SSIM.values(record.scores), ".4f"),
        _mean_text(ADHERENCE.values(record.scores), ".1f"),
        "-" if second is None else f"{1 - second:.4f}",
    ]


def _mean_text(values: list[float] | None, spec: str) -> str:
    found = mean(values)
    return "-" if found is None else format(found, spec)


def _claims_table(comparisons: list[BaselineComparison], full_macs: float) -> list[str]:
    rows = [
        "Claims, rival − baseline on held-out images (positive favours the front; quality as the lead in loss):",
        "",
        "| baseline | MACs | rival MACs | quality | fidelity (PSNR) | adherence | second judge | verdict "
        "| uncached vs baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    named = {c.baseline.digest: c.name for c in comparisons}
    for c in comparisons:
        cells = {"quality": "-", "fidelity": "-", "adherence": "-"}
        if c.claim is not None:
            for family in (c.claim.primary, *c.claim.others):
                cells[family.family] = family.text()
        second = "-"
        if c.second_judge is not None:
            d = c.second_judge
            flag = "" if c.second_judge_agrees is not False else " (disagrees)"
            second = f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}]{flag}"
        rival = c.kept or "-"
        if c.rival is not None:
            name = named.get(c.rival.digest)
            rival = f"{c.rival.macs / full_macs:.3f}" + (f" ({name})" if name else "")
        rows.append(
            f"| {c.name} | {c.baseline.macs / full_macs:.3f} | {rival} | {cells['quality']} | {cells['fidelity']} "
            f"| {cells['adherence']} | {second} | {_verdict_text(c.verdict, c.claim)} "
            f"| {_verdict_text(c.ceiling.verdict, c.ceiling) if c.ceiling else '-'} |"
        )
    return rows


def _verdict_text(verdict: str, claim: Claim | None) -> str:
    """A verdict, with the families a trade-off is behind in."""
    behind = claim.behind() if claim is not None and verdict == "trade-off" else []
    return verdict + (f" (behind in {', '.join(behind)})" if behind else "")


def describe_images(settings: EvaluationSettings) -> str:
    seeds = settings.images_per_prompt
    return (
        f"{settings.num_images} ({len(settings.prompts)} prompts × {seeds} seed{'s' if seeds > 1 else ''} "
        f"from {settings.seed})"
    )
