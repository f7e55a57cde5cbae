"""Export one schedule from a stored run's front, without loading any model weights.

Held-out figures decide when the run has scored its whole final front on them (`held_out` "front"): they are
the only losses the search did not tune on. Otherwise the search's own losses decide (pooled with the
confirmation seeds where the run has them), as they did for the front itself.
"""

from __future__ import annotations

from dataclasses import fields, replace
from operator import attrgetter

from ..cost import estimate_macs
from ..errors import FieldError
from ..frontier import best_within, cheapest_within, knee
from ..models import block_groups, schedule_metadata
from ..pool import genome_bits
from ..schedule import CacheSchedule
from ..search.baselines import ScoredRecord
from ..search.splits import pooled_loss
from ..store import EvaluationRecord, RunInfo, Store
from .outputs import describe
from .prepare import prepare
from .requests import SearchRequest


def require_run(db: str, run: str) -> RunInfo:
    """The stored run, or a one-line error that says how to list the runs there are."""
    Store.validate_url(db)
    info = Store(db, create=False).get_run(run)
    if info is None:
        raise ValueError(f"no run named '{run}' in {db}; list them with `ecad-search runs --db {db}`")
    return info


def export_from_run(
    db: str, run: str, *, max_loss: float | None = None, max_macs: float | None = None, knee_point: bool = False
) -> tuple[CacheSchedule, bool]:
    """One schedule of the run's last front, saved with both figures, and whether held-out losses chose it
    (they do when the whole front has them; else the search's losses do)."""
    info = require_run(db, run)
    store = Store(db, create=False)
    generations = store.generations(run)
    if not generations:
        raise ValueError(f"run '{run}' has no completed generation yet")
    known = {f.name for f in fields(SearchRequest)}
    config = SearchRequest(**{k: v for k, v in info.config.items() if k in known}, generations=1, db=db)
    prepared = prepare(config)
    splits = prepared.splits
    digests = list(generations[-1].archive)
    calibration = store.lookup(info.eval_key, digests)
    confirmation = store.lookup(splits.confirmation.key(), digests) if splits.confirmation else {}
    held_out = store.lookup(splits.held_out.key(), digests)
    front = [calibration[d] for d in digests]
    on_held_out = all(d in held_out for d in digests)
    judged = [held_out[d] if on_held_out else _search_record(calibration[d], confirmation) for d in digests]
    record = _pick(judged, max_loss, max_macs)
    digest = record.digest
    search_loss = _search_record(calibration[digest], confirmation).quality_loss
    scored = ScoredRecord(calibration[digest], search_loss, held_out.get(digest))
    settings = prepared.settings
    template = CacheSchedule.all_compute(
        block_groups(prepared.spec), settings.steps, **schedule_metadata(prepared.spec)
    ).with_metadata(height=settings.resolution, width=settings.resolution, guidance_scale=settings.guidance_scale)
    schedule = template.with_genome(genome_bits(record.genome))
    rank = [r.digest for r in sorted(front, key=lambda r: (r.cost, r.quality_loss))].index(digest)
    described = describe(
        schedule,
        scored,
        prepared,
        generation=generations[-1].index,
        rank=rank,
        full_macs=estimate_macs(template, prepared.spec),
    )
    return described, on_held_out


def _pick(front: list[EvaluationRecord], max_loss: float | None, max_macs: float | None) -> EvaluationRecord:
    """The cheapest record within `max_loss`, the best within `max_macs`, or else the knee."""
    loss = attrgetter("quality_loss")
    if max_loss is not None:
        record = cheapest_within(front, max_loss, loss=loss)
        if record is None:
            best = min(r.quality_loss for r in front)
            raise FieldError(
                f"no schedule on the front has quality loss <= `max_loss` {max_loss}; the best is {best:.4f}"
            )
        return record
    if max_macs is not None:
        record = best_within(front, max_macs, loss=loss)
        if record is None:
            cheapest = min(r.cost for r in front)
            raise FieldError(
                f"no schedule on the front costs <= `max_macs` {max_macs} of the uncached run; the cheapest is "
                f"{cheapest:.4f}"
            )
        return record
    return knee(front, loss=loss)


def _search_record(record: EvaluationRecord, confirmation: dict[str, EvaluationRecord]) -> EvaluationRecord:
    """The record with the loss the search ranked it by: pooled with its confirmation seeds when it has them."""
    confirmed = confirmation.get(record.digest)
    return record if confirmed is None else replace(record, quality_loss=pooled_loss(record, confirmed))
