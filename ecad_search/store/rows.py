"""Between ORM rows and the store's records: conversions, checks of what is stored, and upserts."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..families import FAMILIES_KEY
from .models import Candidate, Evaluation, Generation, Run
from .records import EvaluationRecord, FailureRecord, GenerationRecord, RunInfo, StoreError

_T = TypeVar("_T")

# Digests per IN (...) query: far below every dialect's bound-parameter limit (SQLite's was 999 before 3.32).
CHUNK_SIZE = 500


def dumps(value: Any, what: str) -> str:
    """Canonical plain JSON (sorted keys, no NaN), so equal values give equal text on every platform."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not plain JSON: {exc}") from exc


def real(value: float, what: str) -> float:
    """A float the database stores exactly; NaN is refused because SQLite would silently store it as NULL."""
    number = float(value)
    if math.isnan(number):
        raise StoreError(f"{what} is NaN; the store keeps only real numbers or infinities")
    return number


def chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def find_run(session: Session, name: str) -> Run | None:
    return session.scalar(select(Run).where(Run.name == name))


def require_run(session: Session, name: str) -> Run:
    run = find_run(session, name)
    if run is None:
        raise StoreError(f"no run named {name!r} in this database; list the runs to see their names")
    return run


def check_same_options(run: Run, wanted: dict[str, Any]) -> None:
    stored = {
        "config": json.loads(run.config),
        "eval_key": run.eval_key,
        "model": run.model,
        "metric": run.metric,
        "seed": run.seed,
    }
    differing = [field for field in stored if stored[field] != wanted[field]]
    if not differing:
        return
    if differing[0] == "config":
        old, new = stored["config"], wanted["config"]
        keys = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        differing[0] = "config: " + ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
    raise StoreError(
        f"run {run.name!r} already exists with different options ({'; '.join(differing)}); "
        "pick another `run` name, or repeat the options it was started with to resume it"
    )


def upsert_candidates(session: Session, records: Sequence[EvaluationRecord | FailureRecord]) -> dict[str, Candidate]:
    """The candidates of `records` by digest, inserting the missing ones; a digest's genome must never change."""
    candidates: dict[str, Candidate] = {}
    for chunk in chunks([record.digest for record in records]):
        candidates.update((c.digest, c) for c in session.scalars(select(Candidate).where(Candidate.digest.in_(chunk))))
    for record in records:
        known = candidates.get(record.digest)
        policy = record.policy
        if known is not None and (known.genome, known.policy) != (record.genome, policy):
            raise StoreError(f"digest {record.digest} is stored as another candidate; the digest must hash the mask")
        if known is None:
            fraction = record.genome.count("1") / len(record.genome) if record.genome else getattr(record, "cost", 0.0)
            candidates[record.digest] = Candidate(
                digest=record.digest,
                genome=record.genome,
                genome_length=len(record.genome),
                compute_fraction=fraction,
                policy=policy,
            )
            session.add(candidates[record.digest])
    session.flush()
    return candidates


def evaluated_ids(session: Session, eval_key: str, candidate_ids: list[int]) -> set[int]:
    ids: set[int] = set()
    for chunk in chunks(candidate_ids):
        query = select(Evaluation.candidate_id).where(
            Evaluation.eval_key == eval_key, Evaluation.candidate_id.in_(chunk)
        )
        ids.update(session.scalars(query))
    return ids


def fill_in_families(session: Session, eval_key: str, records: Sequence[tuple[int, EvaluationRecord]]) -> None:
    """Give stored evaluations that predate the families (`families`) the families of a new scoring of the
    same candidate on the same split; every other stored figure stays as it was."""
    wanted = [(candidate_id, record) for candidate_id, record in records if FAMILIES_KEY in record.scores]
    for chunk in chunks(wanted):
        by_id = dict(chunk)
        query = select(Evaluation).where(Evaluation.eval_key == eval_key, Evaluation.candidate_id.in_(list(by_id)))
        for evaluation in session.scalars(query):
            stored = json.loads(evaluation.scores)
            if FAMILIES_KEY not in stored:
                stored[FAMILIES_KEY] = by_id[evaluation.candidate_id].scores[FAMILIES_KEY]
                evaluation.scores = dumps(stored, f"the scores of {evaluation.candidate_id}")


def evaluation_row(record: EvaluationRecord) -> dict[str, Any]:
    """Check one record and turn it into column values (no writes, so a bad batch fails before any of it is stored)."""
    if not record.digest:
        raise StoreError("an evaluation record has an empty digest")
    if record.policy is not None:
        check_policy(record)
    elif not record.genome or set(record.genome) - {"0", "1"}:
        raise StoreError(f"the genome of {record.digest} must be a non-empty string of '0' and '1' characters")
    if not isinstance(record.scores, dict):
        raise StoreError(f"the scores of {record.digest} must be a dict, not {type(record.scores).__name__}")
    return {
        "quality_loss": real(record.quality_loss, f"quality_loss of {record.digest}"),
        "cost": real(record.cost, f"cost of {record.digest}"),
        "macs": real(record.macs, f"macs of {record.digest}"),
        "latency_s": None if record.latency_s is None else real(record.latency_s, f"latency_s of {record.digest}"),
        "scores": dumps(record.scores, f"the scores of {record.digest}"),
        "wall_time_s": real(record.wall_time_s, f"wall_time_s of {record.digest}"),
    }


def check_policy(record: EvaluationRecord) -> None:
    """A candidate that is not a mask: no genome, and a JSON document naming the policy and its knobs, or
    the uncached pipeline's step count (`fewer_steps`)."""
    if record.genome:
        raise StoreError(f"candidate {record.digest} has both a genome and a policy; give one")
    try:
        document = json.loads(cast(str, record.policy))
    except (TypeError, ValueError):
        document = None
    named = isinstance(document, dict) and (
        isinstance(document.get("policy"), str) or isinstance(document.get("steps"), int)
    )
    if not named:
        raise StoreError(
            f"the policy of {record.digest} must be a JSON object naming the policy and its knobs, or the steps"
        )


def run_info(run: Run) -> RunInfo:
    return RunInfo(
        name=run.name,
        config=json.loads(run.config),
        eval_key=run.eval_key,
        model=run.model,
        metric=run.metric,
        seed=run.seed,
        status=run.status,
        generations_done=run.generations_done,
        created_at=run.created_at,
        updated_at=run.updated_at,
        tool_version=run.tool_version,
        generations_planned=run.generations_planned,
    )


def evaluation_record(candidate: Candidate, evaluation: Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        digest=candidate.digest,
        genome=candidate.genome,
        quality_loss=evaluation.quality_loss,
        cost=evaluation.cost,
        macs=evaluation.macs,
        latency_s=evaluation.latency_s,
        scores=json.loads(evaluation.scores),
        wall_time_s=evaluation.wall_time_s,
        policy=candidate.policy,
    )


def generation_record(generation: Generation) -> GenerationRecord:
    return GenerationRecord(
        index=generation.index,
        population=tuple(json.loads(generation.population)),
        archive=tuple(json.loads(generation.archive)),
        hypervolume=generation.hypervolume,
        evaluated=generation.evaluated,
        memo_hits=generation.memo_hits,
        wall_time_s=generation.wall_time_s,
        created_at=generation.created_at,
        confirmed=generation.confirmed,
        images=generation.images,
    )
