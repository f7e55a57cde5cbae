"""Which method is best at each cost budget, and by how much: pure functions on scored points.

A method's point at a budget is its lowest-loss point whose cost is within the budget (cost is the fraction
of the uncached MACs; 1 % slack); a method with nothing that cheap has no point there. The winner at a budget is the
lowest loss among the methods that have one; its margin is taken against the runner-up, on the held-out
images, with the paired bootstrap interval of the search (per prompt, same seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import frontier
from ..verdict import PairedDifference, paired_difference, verdict_word

# Budgets have 1 % slack (relative): FORA-N computes step 0 as well, so FORA-2 costs 50.15 % of the uncached
# MACs at 20 steps, and it belongs at the 50 % budget.
BUDGET_SLACK = 0.01


@dataclass(frozen=True)
class Point:
    """One scored setting of one method on the held-out images: `cost` as a fraction of the uncached MACs
    (overhead included), `loss` in the search's metric, the metric's per-prompt scores (for paired intervals)
    and any other figures (PSNR, SSIM, MACs, wall time)."""

    method: str
    label: str
    digest: str
    cost: float
    loss: float
    prompt_scores: tuple[float, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetResult:
    """The best point of each method at one budget, the winner, and its lead over the runner-up."""

    budget: float
    best: dict[str, Point | None]
    winner: Point | None
    runner_up: Point | None
    lead: PairedDifference | None

    @property
    def verdict(self) -> str:
        """ "wins" when the winner's lead is clear of zero, "ties" when it is within noise, "alone" when no
        other method has a point this cheap, "-" when none has."""
        if self.winner is None:
            return "-"
        if self.runner_up is None:
            return "alone"
        if self.lead is None:
            return "ahead"
        return "wins" if self.lead.verdict == 1 else "ties"


def best_at(points: Sequence[Point], budget: float) -> Point | None:
    """The lowest-loss point within the budget (the cheaper one on equal loss), or None."""
    return frontier.best_within(points, budget, slack=BUDGET_SLACK)


def at_budgets(methods: Mapping[str, Sequence[Point]], budgets: Sequence[float]) -> list[BudgetResult]:
    """For each budget: every method's best point, the winner, and its paired lead over the runner-up
    (runner-up's loss minus the winner's, per prompt: positive means the winner is better)."""
    results = []
    for budget in budgets:
        best = {name: best_at(points, budget) for name, points in methods.items()}
        ranked = sorted((p for p in best.values() if p is not None), key=lambda p: (p.loss, p.cost))
        winner = ranked[0] if ranked else None
        runner_up = ranked[1] if len(ranked) > 1 else None
        lead = None
        if winner is not None and runner_up is not None and _paired(winner, runner_up):
            # Scores are higher-is-better: the winner's minus the runner-up's is its lead in loss.
            lead = paired_difference(winner.prompt_scores, runner_up.prompt_scores)
        results.append(BudgetResult(budget, best, winner, runner_up, lead))
    return results


@dataclass(frozen=True)
class Versus:
    """One method's best point at a budget against the best point of every other method there; `lead` is the
    other's loss minus this one's, per paired score (positive: this method is better)."""

    budget: float
    ours: Point
    theirs: Point
    lead: PairedDifference | None

    @property
    def verdict(self) -> str:
        if self.lead is None:
            return "unpaired"
        return verdict_word(self.lead)


def versus_best_other(results: Sequence[BudgetResult], method: str) -> list[Versus]:
    """At each budget where `method` and some other method have a point: how it fares against the best other."""
    rows = []
    for result in results:
        ours = result.best.get(method)
        others = [p for name, p in result.best.items() if name != method and p is not None]
        if ours is None or not others:
            continue
        theirs = min(others, key=lambda p: (p.loss, p.cost))
        lead = paired_difference(ours.prompt_scores, theirs.prompt_scores) if _paired(ours, theirs) else None
        rows.append(Versus(result.budget, ours, theirs, lead))
    return rows


def _paired(a: Point, b: Point) -> bool:
    return len(a.prompt_scores) == len(b.prompt_scores) > 0


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both cost and loss, cheapest first."""
    return frontier.non_dominated(points)


def reference_point(methods: Mapping[str, Sequence[Point]]) -> tuple[float, float]:
    """One reference point for every method: cost 1 (the uncached run) and 10 % above the worst loss seen,
    so every point counts and the methods' hypervolumes compare."""
    losses = [p.loss for points in methods.values() for p in points]
    worst = max(losses, default=1.0)
    return 1.0, worst + 0.1 * abs(worst) + 1e-12


def hypervolume(points: Sequence[Point], reference: tuple[float, float]) -> float:
    """The area dominated by the points in (cost, loss), up to the reference point (both minimised); points
    beyond it add nothing."""
    inside = [p for p in points if p.cost <= reference[0] and p.loss <= reference[1]]
    return frontier.hypervolume(inside, reference)
