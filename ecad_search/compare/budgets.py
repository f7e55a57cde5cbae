"""Which method is best at each cost budget, and by how much: pure functions on scored points.

A method's point at a budget is its lowest-loss point whose cost is within the budget (cost is the fraction
of the uncached MACs; 1 % slack); a method with nothing that cheap has no point there. The winner at a budget is the
lowest loss among the methods that have one; the report judges its claim over the runner-up, on the held-out
images, in every family (`verdict.ClaimRules`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import frontier

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
    """The best point of each method at one budget, the winner (lowest loss) and the runner-up; the claim of
    one over the other is judged under the rule (`verdict.ClaimRules`) by the report."""

    budget: float
    best: dict[str, Point | None]
    winner: Point | None
    runner_up: Point | None


def best_at(points: Sequence[Point], budget: float) -> Point | None:
    """The lowest-loss point within the budget (the cheaper one on equal loss), or None."""
    return frontier.best_within(points, budget, slack=BUDGET_SLACK)


def at_budgets(methods: Mapping[str, Sequence[Point]], budgets: Sequence[float]) -> list[BudgetResult]:
    """For each budget: every method's best point, the winner and the runner-up by loss."""
    results = []
    for budget in budgets:
        best = {name: best_at(points, budget) for name, points in methods.items()}
        ranked = sorted((p for p in best.values() if p is not None), key=lambda p: (p.loss, p.cost))
        winner = ranked[0] if ranked else None
        runner_up = ranked[1] if len(ranked) > 1 else None
        results.append(BudgetResult(budget, best, winner, runner_up))
    return results


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
