"""Quality metrics, one module per metric: `reward` (digits), `fidelity` (SSIM/PSNR vs uncached, no weights),
`image-reward` and `clip` (optional, need their weights). Each module lists its classes in `METRICS`; the
registry collects them, so adding a metric touches no other file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from .base import MetricNotAvailableError, QualityMetric

__all__ = ["MetricNotAvailableError", "QualityMetric", "UnknownMetricError", "get_metric", "metric_names"]


class UnknownMetricError(ValueError):
    """No metric of that name."""


@cache
def _metrics() -> dict[str, type[QualityMetric]]:
    found: dict[str, type[QualityMetric]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.update({metric.name: metric for metric in getattr(module, "METRICS", ())})
    return found


def metric_names() -> list[str]:
    return sorted(_metrics())


def get_metric(name: str) -> type[QualityMetric]:
    if name not in _metrics():
        raise UnknownMetricError(f"unknown metric '{name}': use one of {', '.join(metric_names())}")
    return _metrics()[name]
