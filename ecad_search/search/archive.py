"""Every non-dominated schedule ever evaluated (not just the last population), and its hypervolume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..frontier import hypervolume, non_dominated

REFERENCE_COST = 1.0
"""The uncached run's cost; the reference loss is the metric's (`QualityMetric.reference_loss`)."""


@dataclass(frozen=True)
class Point:
    digest: str
    genome: np.ndarray
    objectives: tuple[float, float]

    @property
    def loss(self) -> float:
        return self.objectives[0]

    @property
    def cost(self) -> float:
        return self.objectives[1]


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
        return non_dominated(list(self.points.values()))

    def hypervolume(self) -> float:
        reference_loss, reference_cost = self.reference_point
        return hypervolume(self.front(), (reference_cost, reference_loss))
