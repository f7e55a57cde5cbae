"""Export one schedule from a stored run's front, without loading any model weights.

Held-out figures decide when the run has scored its whole final front on them: they are the only losses
the search did not tune on.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..cost import estimate_macs
from ..models import block_groups, schedule_metadata
from ..schedule import CacheSchedule
from ..store import RunInfo, Store
from .report import ScoredRecord, describe
from .runner import SearchConfig, prepare
from .select import best_within, cheapest_within, knee
from .splits import pooled_loss


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
    """One schedule of the run's last front, chosen on held-out losses when the whole front has them (else on
    the search's calibration losses), saved with both figures."""
    info = require_run(db, run)
    store = Store(db, create=False)
    generations = store.generations(run)
    if not generations:
        raise ValueError(f"run '{run}' has no completed generation yet")
    known = {f.name for f in fields(SearchConfig)}
    config = SearchConfig(**{k: v for k, v in info.config.items() if k in known}, generations=1, db=db)
    prepared = prepare(config)
    splits = prepared.splits
    digests = list(generations[-1].archive)
    calibration = store.lookup(info.eval_key, digests)
    confirmation = store.lookup(splits.confirmation.key(), digests) if splits.confirmation else {}
    held_out = store.lookup(splits.held_out.key(), digests)
    front = [calibration[d] for d in digests]
    judged = [held_out[d] for d in digests] if all(d in held_out for d in digests) else front
    if max_loss is not None:
        record = cheapest_within(judged, max_loss)
    elif max_macs is not None:
        record = best_within(judged, max_macs)
    else:
        record = knee(judged)
    digest = record.digest
    loss = pooled_loss(calibration[digest], confirmation[digest]) if digest in confirmation else None
    scored = ScoredRecord(calibration[digest], loss or calibration[digest].quality_loss, held_out.get(digest))
    settings = prepared.settings
    template = CacheSchedule.all_compute(
        block_groups(prepared.spec), settings.steps, **schedule_metadata(prepared.spec)
    ).with_metadata(height=settings.resolution, width=settings.resolution, guidance_scale=settings.guidance_scale)
    schedule = template.with_genome(np.frombuffer(record.genome.encode(), dtype=np.uint8) == ord("1"))
    rank = [r.digest for r in sorted(front, key=lambda r: (r.cost, r.quality_loss))].index(digest)
    return describe(
        schedule,
        scored,
        prepared,
        generation=generations[-1].index,
        rank=rank,
        full_macs=estimate_macs(template, prepared.spec),
    )
