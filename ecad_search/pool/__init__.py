"""Where candidates are scored: in this process (`LocalPool`), or on Ray workers that each keep a pipeline
loaded (`RayPool`, imported only when asked for, so an in-process search never imports Ray)."""

from __future__ import annotations

from ..models import ModelSpec
from .base import (
    Candidate,
    EvaluationPool,
    OnOutcome,
    Outcome,
    PoolError,
    PoolStatus,
    genome_bits,
    genome_text,
    record_of,
    resident_mib,
)
from .local import LocalPool


def make_pool(
    spec: ModelSpec,
    device: str = "cpu",
    *,
    workers: int = 0,
    address: str | None = None,
    gpus_per_worker: float = 1.0,
    prefix_mib: int = 0,
) -> EvaluationPool:
    """In-process with no workers and no address, else Ray workers (a local Ray sized to them without one);
    either way sharing prefixes within `prefix_mib` (0: not at all)."""
    if workers == 0 and not address:
        return LocalPool(spec, device, prefix_mib=prefix_mib)
    from .ray_pool import RayPool

    return RayPool(spec, workers=workers, address=address, gpus_per_worker=gpus_per_worker, prefix_mib=prefix_mib)


__all__ = [
    "Candidate",
    "EvaluationPool",
    "LocalPool",
    "OnOutcome",
    "Outcome",
    "PoolError",
    "PoolStatus",
    "genome_bits",
    "genome_text",
    "make_pool",
    "record_of",
    "resident_mib",
]
