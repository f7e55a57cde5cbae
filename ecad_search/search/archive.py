"""Every non-dominated schedule ever evaluated (not just the last population), and its hypervolume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

REFERENCE_COST = 1.0
"""The uncached run's cost; the reference loss is the metric's (`QualityMetric.reference_loss`)."""


@dataclass(frozen=True)
class Point:
    digest: str
    genome: np.ndarray
    objectives: tuple[float, float]


class Archive:
    """All evaluated points by digest; the front is computed from all of them, once per new point.

    A generation asks for the front several times (refinement, hypervolume, progress, outputs, the FORA
    comparison); it is sorted again only after a point it has not seen was added.
    """

    def __init__(self, reference_loss: float = 1.0) -> None:
        self.reference_point = np.array([reference_loss, REFERENCE_COST])
        self.points: dict[str, Point] = {}
        self._front: list[Point] | None = None

    def add(self, digest: str, genome: np.ndarray, objectives: tuple[float, float]) -> None:
        if digest not in self.points:
            self.points[digest] = Point(digest, genome, objectives)
            self._front = None

    def rescore(self, digest: str, objectives: tuple[float, float]) -> None:
        """New objectives for a known point (its loss pooled with confirmation scores)."""
        point = self.points[digest]
        self.points[digest] = Point(digest, point.genome, objectives)
        self._front = None

    def front(self) -> list[Point]:
        """Non-dominated points, cheapest first."""
        if self._front is None:
            self._front = self._non_dominated()
        return list(self._front)

    def _non_dominated(self) -> list[Point]:
        if not self.points:
            return []
        points = list(self.points.values())
        F = np.array([p.objectives for p in points])
        indices = NonDominatedSorting().do(F, only_non_dominated_front=True)
        return sorted((points[i] for i in indices), key=lambda p: (p.objectives[1], p.objectives[0]))

    def hypervolume(self) -> float:
        front = self.front()
        if not front:
            return 0.0
        F = np.minimum(np.array([p.objectives for p in front]), self.reference_point)
        return float(HV(ref_point=self.reference_point)(F))
