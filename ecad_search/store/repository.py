"""Reading and writing the search store: runs, the evaluation memo, and generation history.

The search driver is the only writer. Every write is one transaction, and every write is idempotent, so a driver
that crashed half-way can simply redo its last step after a restart: nothing is stored twice and no mask is ever
evaluated twice under the same evaluation settings (`eval_key`). Values cross this module as plain frozen
dataclasses, never as ORM objects, so callers cannot trigger lazy loads on a closed session.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from . import claims, migrations
from .connection import (
    check_own_tables,
    check_sqlite_file,
    checked_url,
    engine_for,
    open_error,
    sqlite_exists,
    sqlite_file,
)
from .models import Candidate, Evaluation, Failure, Generation, Run, utc_now
from .records import RUN_STATUSES, EvaluationRecord, FailureRecord, GenerationRecord, RunInfo, StoreError, signals_held
from .rows import (
    check_same_options,
    chunks,
    dumps,
    evaluated_ids,
    evaluation_record,
    evaluation_row,
    fill_in_families,
    find_run,
    generation_record,
    real,
    require_run,
    run_info,
    upsert_candidates,
)

# A claim lapses this long after its holder last renewed it (renewed four times per period while held).
CLAIM_TTL_S = 120.0


class Store:
    """The search database at one SQLAlchemy URL (SQLite by default; any synchronous SQLAlchemy driver works)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the store, creating its tables if needed; with `create=False` (readers such as `runs` and
        `export`), a database that does not exist or holds no runs is an error and nothing is created."""
        parsed, dialect = checked_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        if not create and dialect.name == "sqlite" and not sqlite_exists(parsed):
            raise StoreError(f"no database at {self.url!r}; run a search first, or give the `db` it used")
        self._engine = engine_for(parsed, dialect)
        try:
            has_tables = check_own_tables(self._engine, self.url)
            if not has_tables and not create:
                raise StoreError(f"database {self.url!r} holds no ecad-search runs; give the --db a search used")
            migrations.upgrade(self._engine, has_tables)
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise open_error(self.url, dialect, exc) from exc
        except StoreError:
            self._engine.dispose()
            raise
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self.holder = claims.new_holder()

    @staticmethod
    def local_file(url: str) -> Path | None:
        """The file an SQLite URL names; None for servers, in-memory and URI databases."""
        parsed, dialect = checked_url(url)
        return sqlite_file(parsed) if dialect.name == "sqlite" else None

    @staticmethod
    def validate_url(url: str) -> None:
        """Raise `StoreError` if `url` cannot be opened or holds tables of our names that are not ours; creates
        and changes nothing, so the CLI can check options up front.

        An SQLite file that does not exist yet is checked by its path alone (connecting would create it); an
        existing one is opened read-only. A server is connected to once.
        """
        parsed, dialect = checked_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if dialect.name == "sqlite":
            check_sqlite_file(parsed, shown)
            return
        engine = engine_for(parsed, dialect)
        try:
            check_own_tables(engine, shown)
        except SQLAlchemyError as exc:
            raise open_error(parsed.render_as_string(hide_password=True), dialect, exc) from exc
        finally:
            engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One write transaction, never cut short by a signal (`signals_held`)."""
        with signals_held(), self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start_run(
        self,
        name: str,
        config: dict[str, Any],
        eval_key: str,
        model: str,
        metric: str,
        seed: int,
        tool_version: str,
        generations_planned: int | None = None,
    ) -> RunInfo:
        """Create the run, or resume the one of that name if it was started with the same options;
        `generations_planned` is how many generations this invocation runs to (for `status`'s ETA)."""
        if not name:
            raise StoreError("the run name is empty; give one as `run`")
        if not isinstance(config, dict):
            raise StoreError(f"the run config must be a dict, not {type(config).__name__}")
        config_json = dumps(config, "the run config")
        wanted = {
            "config": json.loads(config_json),
            "eval_key": eval_key,
            "model": model,
            "metric": metric,
            "seed": int(seed),
        }
        with self._writing() as session:
            run = find_run(session, name)
            if run is None:
                run = Run(
                    name=name,
                    config=config_json,
                    eval_key=eval_key,
                    model=model,
                    metric=metric,
                    seed=int(seed),
                    status="running",
                    generations_done=0,
                    tool_version=tool_version,
                    generations_planned=generations_planned,
                )
                session.add(run)
            else:
                check_same_options(run, wanted)
                run.status = "running"
                run.updated_at = utc_now()
                run.generations_planned = generations_planned
            session.flush()
            return run_info(run)

    def get_run(self, name: str) -> RunInfo | None:
        with self._sessions() as session:
            run = find_run(session, name)
            return None if run is None else run_info(run)

    def list_runs(self) -> list[RunInfo]:
        """All runs, oldest first."""
        with self._sessions() as session:
            return [run_info(run) for run in session.scalars(select(Run).order_by(Run.id))]

    def set_status(self, run_name: str, status: str) -> None:
        if status not in RUN_STATUSES:
            raise StoreError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}")
        with self._writing() as session:
            run = require_run(session, run_name)
            run.status = status
            run.updated_at = utc_now()

    def lookup(self, eval_key: str, digests: Sequence[str]) -> dict[str, EvaluationRecord]:
        """The stored evaluations of those digests under `eval_key`; digests never evaluated are absent."""
        found: dict[str, EvaluationRecord] = {}
        with self._sessions() as session:
            for chunk in chunks(list(dict.fromkeys(digests))):
                query = (
                    select(Candidate, Evaluation)
                    .join(Evaluation, Evaluation.candidate_id == Candidate.id)
                    .where(Evaluation.eval_key == eval_key, Candidate.digest.in_(chunk))
                )
                for candidate, evaluation in session.execute(query):
                    found[candidate.digest] = evaluation_record(candidate, evaluation)
        return found

    def evaluations_for(self, eval_key: str, digests: Sequence[str]) -> list[EvaluationRecord]:
        """Like `lookup`, as a list in the order of `digests` (repeats kept, digests never evaluated skipped)."""
        found = self.lookup(eval_key, digests)
        return [found[digest] for digest in digests if digest in found]

    def count_evaluations(self, eval_key: str) -> int:
        with self._sessions() as session:
            query = select(func.count()).select_from(Evaluation).where(Evaluation.eval_key == eval_key)
            return int(session.scalar(query) or 0)

    def count_failures(self, eval_key: str) -> int:
        with self._sessions() as session:
            return int(
                session.scalar(select(func.count()).select_from(Failure).where(Failure.eval_key == eval_key)) or 0
            )

    def claim(self, eval_key: str, digests: Sequence[str], ttl_s: float = CLAIM_TTL_S) -> set[str]:
        """Claim the digests no live driver holds under `eval_key`; returns those this store holds now. Each
        `Store` is one holder (`claims`); recording a result releases its claim."""
        mine: set[str] = set()
        with self._writing() as session:
            for chunk in chunks(list(dict.fromkeys(digests))):
                mine |= claims.claim(session, eval_key, chunk, self.holder, ttl_s)
        return mine

    def release_claims(self, eval_key: str, digests: Sequence[str]) -> None:
        with self._writing() as session:
            for chunk in chunks(list(dict.fromkeys(digests))):
                claims.release(session, eval_key, chunk, self.holder)

    @contextmanager
    def claims_kept(self, ttl_s: float = CLAIM_TTL_S) -> Iterator[None]:
        """Renew this store's claims in the background while the block runs (a long candidate keeps its
        claim); when the process dies, its claims lapse."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl_s / 4):
                with self._writing() as session:
                    claims.renew(session, self.holder, ttl_s)

        keeper = threading.Thread(target=renew, name="ecad-search-claims", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def record_failure(self, eval_key: str, failure: FailureRecord) -> None:
        """Store a candidate that could not be scored under `eval_key` (once: a stored failure stays), and
        release this store's claim on it in the same transaction."""
        with self._writing() as session:
            claims.release(session, eval_key, [failure.digest], self.holder)
            candidate = upsert_candidates(session, [failure])[failure.digest]
            known = select(Failure.id).where(Failure.eval_key == eval_key, Failure.candidate_id == candidate.id)
            if session.scalar(known) is None:
                session.add(
                    Failure(
                        candidate_id=candidate.id, eval_key=eval_key, error=failure.error, attempts=failure.attempts
                    )
                )

    def failures(self, eval_key: str, digests: Sequence[str]) -> dict[str, FailureRecord]:
        """The stored failures of those digests under `eval_key`."""
        found: dict[str, FailureRecord] = {}
        with self._sessions() as session:
            for chunk in chunks(list(dict.fromkeys(digests))):
                query = (
                    select(Candidate, Failure)
                    .join(Failure, Failure.candidate_id == Candidate.id)
                    .where(Failure.eval_key == eval_key, Candidate.digest.in_(chunk))
                )
                for candidate, failure in session.execute(query):
                    found[candidate.digest] = FailureRecord(
                        candidate.digest, candidate.genome, failure.error, failure.attempts
                    )
        return found

    def record_evaluations(self, eval_key: str, records: Sequence[EvaluationRecord]) -> int:
        """Store new evaluations and their candidates; ones already stored are left as they are, but for the
        figures an older version did not store (`families`), which fill in. This store's claims on them are
        released in the same transaction.

        Returns how many evaluations were new. Everything is checked before anything is written, and the whole
        batch is one transaction, so a bad record or a crash leaves the store as it was.
        """
        first: dict[str, EvaluationRecord] = {}
        for record in records:
            first.setdefault(record.digest, record)
        unique = list(first.values())
        rows = [evaluation_row(record) for record in unique]
        with self._writing() as session:
            claims.release(session, eval_key, [record.digest for record in unique], self.holder)
            candidates = upsert_candidates(session, unique)
            stored = evaluated_ids(session, eval_key, [candidate.id for candidate in candidates.values()])
            new = [
                Evaluation(candidate_id=candidates[record.digest].id, eval_key=eval_key, **row)
                for record, row in zip(unique, rows, strict=True)
                if candidates[record.digest].id not in stored
            ]
            session.add_all(new)
            fill_in_families(
                session, eval_key, [(candidates[r.digest].id, r) for r in unique if candidates[r.digest].id in stored]
            )
            return len(new)

    def record_generation(
        self,
        run_name: str,
        index: int,
        population: Sequence[str],
        archive: Sequence[str],
        hypervolume: float,
        evaluated: int,
        memo_hits: int,
        wall_time_s: float,
        confirmed: int = 0,
        images: int | None = None,
    ) -> bool:
        """Store a finished generation and advance the run's `generations_done`; False if it was already stored."""
        if index < 0:
            raise StoreError(f"generation index {index} is negative")
        row = {
            "population": dumps(list(population), "the population"),
            "archive": dumps(list(archive), "the archive"),
            "hypervolume": real(hypervolume, "hypervolume"),
            "evaluated": int(evaluated),
            "memo_hits": int(memo_hits),
            "wall_time_s": real(wall_time_s, "wall_time_s"),
            "confirmed": int(confirmed),
            "images": None if images is None else int(images),
        }
        with self._writing() as session:
            run = require_run(session, run_name)
            exists = session.scalar(select(Generation.id).where(Generation.run_id == run.id, Generation.index == index))
            if exists is None:
                session.add(Generation(run_id=run.id, index=index, **row))
            run.generations_done = max(run.generations_done, index + 1)
            run.updated_at = utc_now()
            return exists is None

    def generations(self, run_name: str) -> list[GenerationRecord]:
        """The run's stored generations in index order."""
        with self._sessions() as session:
            run = require_run(session, run_name)
            query = select(Generation).where(Generation.run_id == run.id).order_by(Generation.index)
            return [generation_record(generation) for generation in session.scalars(query)]
