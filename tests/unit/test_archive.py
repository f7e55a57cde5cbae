"""The archive: every non-dominated point ever evaluated, and its hypervolume against the metric's worst loss."""

from __future__ import annotations

import numpy as np
import pytest

from ecad_search.search.archive import Archive


def _archive(reference_loss: float, points: dict[str, tuple[float, float]]) -> Archive:
    archive = Archive(reference_loss)
    for digest, objectives in points.items():
        archive.add(digest, np.array([True]), objectives)
    return archive


def test_front_is_the_non_dominated_points_cheapest_first() -> None:
    archive = _archive(1.0, {"a": (0.1, 0.9), "b": (0.5, 0.3), "c": (0.6, 0.9), "d": (0.05, 1.0)})
    assert [p.digest for p in archive.front()] == ["b", "a", "d"]


def test_hypervolume_uses_the_metrics_reference_loss() -> None:
    """Two points, rectangles against (reference loss, cost 1): the union's area, by hand."""
    points = {"a": (0.2, 0.5), "b": (0.6, 0.25)}
    assert _archive(1.0, points).hypervolume() == pytest.approx(0.8 * 0.5 + 0.4 * 0.25)
    scaled = {"a": (20.0, 0.5), "b": (60.0, 0.25)}
    assert _archive(100.0, scaled).hypervolume() == pytest.approx(80 * 0.5 + 40 * 0.25)
    assert _archive(1.0, scaled).hypervolume() == 0.0, "losses past the reference point add nothing"
