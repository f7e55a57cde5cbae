"""Fronts of (cost, loss) points, both minimised: the non-dominated front, its hypervolume, and one point of
it picked by a budget, a loss bound or the knee. One definition for the search's archive, the budget
comparisons of `compare`, and `export`.

Functions take any points and read their cost and loss through `cost=` and `loss=` (the attributes `cost`
and `loss` by default), so search records, archive points and compare points share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, TypeVar

import numpy as np

P = TypeVar("P")
Read = Callable[[Any], float]
COST: Read = attrgetter("cost")
LOSS: Read = attrgetter("loss")


def non_dominated(points: Sequence[P], cost: Read = COST, loss: Read = LOSS) -> list[P]:
    """The points no other point beats in both cost and loss (equal points all stay), cheapest first."""
    if not points:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    objectives = np.array([[loss(p), cost(p)] for p in points])
    indices = NonDominatedSorting().do(objectives, only_non_dominated_front=True)
    return sorted((points[i] for i in indices), key=lambda p: (cost(p), loss(p)))


def hypervolume(points: Sequence[P], reference: tuple[float, float], cost: Read = COST, loss: Read = LOSS) -> float:
    """The area the points dominate in (cost, loss) up to `reference` (cost, loss); points beyond it are
    clipped to it, so they add nothing."""
    if not points:
        return 0.0
    from pymoo.indicators.hv import HV

    bound = np.array(reference)
    clipped = np.minimum(np.array([[cost(p), loss(p)] for p in points]), bound)
    return float(HV(ref_point=bound)(clipped))


def best_within(
    points: Sequence[P], budget: float, cost: Read = COST, loss: Read = LOSS, slack: float = 0.0
) -> P | None:
    """The lowest-loss point that costs at most `budget` (× (1 + `slack`)), the cheaper on equal loss; None
    when nothing is that cheap."""
    affordable = [p for p in points if cost(p) <= budget * (1 + slack)]
    return min(affordable, key=lambda p: (loss(p), cost(p))) if affordable else None


def cheapest_within(points: Sequence[P], max_loss: float, cost: Read = COST, loss: Read = LOSS) -> P | None:
    """The cheapest point whose loss is at most `max_loss`, the lower loss on equal cost; None when none is."""
    fitting = [p for p in points if loss(p) <= max_loss]
    return min(fitting, key=lambda p: (cost(p), loss(p))) if fitting else None


def knee(points: Sequence[P], cost: Read = COST, loss: Read = LOSS) -> P:
    """The point farthest from the line joining the front's two ends, in objectives normalised to [0, 1]."""
    if len(points) <= 2:
        return min(points, key=lambda p: loss(p) + cost(p))
    objectives = np.array([[cost(p), loss(p)] for p in points])
    span = np.where(np.ptp(objectives, axis=0) > 0, np.ptp(objectives, axis=0), 1.0)
    normalised = (objectives - objectives.min(axis=0)) / span
    order = np.argsort(normalised[:, 0])
    start, end = normalised[order[0]], normalised[order[-1]]
    direction = (end - start) / max(np.linalg.norm(end - start), 1e-12)
    offsets = normalised - start
    distances = np.abs(offsets[:, 0] * direction[1] - offsets[:, 1] * direction[0])
    return points[int(np.argmax(distances))]
