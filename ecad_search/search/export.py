"""Export one schedule from a stored run's front, without loading any model weights."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..cost import estimate_macs
from ..models import block_groups, schedule_metadata
from ..schedule import CacheSchedule
from ..store import RunInfo, Store
from .report import describe
from .runner import SearchConfig, prepare
from .select import best_within, cheapest_within, knee


def require_run(db: str, run: str) -> RunInfo:
    """The stored run, or a one-line error that says how to list the runs there are."""
    Store.validate_url(db)
    info = Store(db, create=False).get_run(run)
    if info is None:
        raise ValueError(f"no run named '{run}' in {db}; list them with `ecad-search runs --db {db}`")
    return info


def export_from_run(
    db: str, run: str, *, max_loss: float | None = None, max_macs: float | None = None, knee_point: bool = False
) -> CacheSchedule:
    info = require_run(db, run)
    store = Store(db, create=False)
    generations = store.generations(run)
    if not generations:
        raise ValueError(f"run '{run}' has no completed generation yet")
    known = {f.name for f in fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in info.config.items() if k in known}, generations=1, db=db)
    prepared = prepare(config)
    front = store.evaluations_for(info.eval_key, list(generations[-1].archive))
    if max_loss is not None:
        record = cheapest_within(front, max_loss)
    elif max_macs is not None:
        record = best_within(front, max_macs)
    else:
        record = knee(front)
    settings = prepared.settings
    template = CacheSchedule.all_compute(
        block_groups(prepared.spec), settings.steps, **schedule_metadata(prepared.spec)
    ).with_metadata(height=settings.resolution, width=settings.resolution, guidance_scale=settings.guidance_scale)
    schedule = template.with_genome(np.frombuffer(record.genome.encode(), dtype=np.uint8) == ord("1"))
    rank = [r.digest for r in sorted(front, key=lambda r: (r.cost, r.quality_loss))].index(record.digest)
    return describe(
        schedule,
        record,
        prepared,
        generation=generations[-1].index,
        rank=rank,
        full_macs=estimate_macs(template, prepared.spec),
    )
