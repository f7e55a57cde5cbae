"""Pick one schedule from a front: the cheapest within a quality bound, the best within a cost bound, or
the knee (the point farthest from the line joining the front's two ends, in normalised objectives)."""

from __future__ import annotations

import numpy as np

from ..store import EvaluationRecord


def cheapest_within(front: list[EvaluationRecord], max_quality_loss: float) -> EvaluationRecord:
    fitting = [r for r in front if r.quality_loss <= max_quality_loss]
    if not fitting:
        best = min(r.quality_loss for r in front)
        raise ValueError(f"no schedule on the front has quality loss <= {max_quality_loss}; the best is {best:.4f}")
    return min(fitting, key=lambda r: (r.cost, r.quality_loss))


def best_within(front: list[EvaluationRecord], max_cost: float) -> EvaluationRecord:
    fitting = [r for r in front if r.cost <= max_cost]
    if not fitting:
        cheapest = min(r.cost for r in front)
        raise ValueError(
            f"no schedule on the front costs <= {max_cost} of the uncached run; the cheapest is {cheapest:.4f}"
        )
    return min(fitting, key=lambda r: (r.quality_loss, r.cost))


def knee(front: list[EvaluationRecord]) -> EvaluationRecord:
    if len(front) <= 2:
        return min(front, key=lambda r: r.quality_loss + r.cost)
    F = np.array([[r.cost, r.quality_loss] for r in front])
    span = np.where(np.ptp(F, axis=0) > 0, np.ptp(F, axis=0), 1.0)
    F = (F - F.min(axis=0)) / span
    order = np.argsort(F[:, 0])
    start, end = F[order[0]], F[order[-1]]
    direction = (end - start) / max(np.linalg.norm(end - start), 1e-12)
    offsets = F - start
    distances = np.abs(offsets[:, 0] * direction[1] - offsets[:, 1] * direction[0])
    return front[int(np.argmax(distances))]
