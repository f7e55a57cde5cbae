"""Reading and writing the search store: runs, the evaluation memo, and generation history.

The search driver is the only writer. Every write is one transaction, and every write is idempotent, so a driver
that crashed half-way can simply redo its last step after a restart: nothing is stored twice and no mask is ever
evaluated twice under the same evaluation settings (`eval_key`). Values cross this module as plain frozen
dataclasses, never as ORM objects, so callers cannot trigger lazy loads on a closed session.
"""

from __future__ import annotations

import json
import math
import re
import signal
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from . import claims, migrations
from .models import Base, Candidate, Evaluation, Failure, Generation, Run, utc_now

_T = TypeVar("_T")

RUN_STATUSES = ("running", "finished", "interrupted", "failed")

# Digests per IN (...) query: far below every dialect's bound-parameter limit (SQLite's was 999 before 3.32).
CHUNK_SIZE = 500

# Seconds to wait for a database server: an unreachable host must fail fast, not hang the CLI.
CONNECT_TIMEOUT_S = 10
# A claim lapses this long after its holder last renewed it (renewed four times per period while held).
CLAIM_TTL_S = 120.0

_TIMEOUT_ARG = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
}

_INSTALL_HINT = {
    "psycopg2": "pip install psycopg2-binary, or use 'postgresql+psycopg://' with psycopg 3",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
    "pymysql": "pip install pymysql",
    "mysqldb": "pip install mysqlclient",
}


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until a write transaction has committed or rolled back, then arrive as usual.

    Interrupted inside one, SQLite can stay locked, and the run's final status could not be recorded. Held
    around a write and what follows it, a signal arrives only once both are done. Only the main thread can
    handle signals; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)


class StoreError(ValueError):
    """A problem the user can fix (bad URL, conflicting run options); the message is one line."""


@dataclass(frozen=True)
class RunInfo:
    name: str
    config: dict[str, Any]
    eval_key: str
    model: str
    metric: str
    seed: int
    status: str
    generations_done: int
    created_at: datetime
    updated_at: datetime
    tool_version: str
    generations_planned: int | None = None


@dataclass(frozen=True)
class EvaluationRecord:
    """One candidate's measured objectives; `genome` is the mask as '0'/'1' characters, or empty with `policy`
    (an online policy's JSON document) instead; `digest` is the sha256 of either."""

    digest: str
    genome: str
    quality_loss: float
    cost: float
    macs: float
    latency_s: float | None
    scores: dict[str, Any]
    wall_time_s: float
    policy: str | None = None


@dataclass(frozen=True)
class FailureRecord:
    """A candidate that could not be scored: what went wrong on its last try, and how many tries it had."""

    digest: str
    genome: str
    error: str
    attempts: int
    policy: str | None = None


@dataclass(frozen=True)
class GenerationRecord:
    index: int
    population: tuple[str, ...]
    archive: tuple[str, ...]
    hypervolume: float
    evaluated: int
    memo_hits: int
    wall_time_s: float
    created_at: datetime
    confirmed: int = 0
    images: int | None = None


class Store:
    """The search database at one SQLAlchemy URL (SQLite by default; any synchronous SQLAlchemy driver works)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the store, creating its tables if needed; with `create=False` (readers such as `runs` and
        `export`), a database that does not exist or holds no runs is an error and nothing is created."""
        parsed, dialect = _checked_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        if not create and dialect.name == "sqlite" and not _sqlite_exists(parsed):
            raise StoreError(f"no database at {self.url!r}; run a search first, or give the --db it used")
        self._engine = _create_engine(parsed, dialect)
        try:
            has_tables = _check_own_tables(self._engine, self.url)
            if not has_tables and not create:
                raise StoreError(f"database {self.url!r} holds no ecad-search runs; give the --db a search used")
            migrations.upgrade(self._engine, has_tables)
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise _open_error(self.url, dialect, exc) from exc
        except StoreError:
            self._engine.dispose()
            raise
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self.holder = claims.new_holder()

    @staticmethod
    def local_file(url: str) -> Path | None:
        """The file an SQLite URL names; None for servers, in-memory and URI databases."""
        parsed, dialect = _checked_url(url)
        return _sqlite_file(parsed) if dialect.name == "sqlite" else None

    @staticmethod
    def validate_url(url: str) -> None:
        """Raise `StoreError` if `url` cannot be opened or holds tables of our names that are not ours; creates
        and changes nothing, so the CLI can check options up front.

        An SQLite file that does not exist yet is checked by its path alone (connecting would create it); an
        existing one is opened read-only. A server is connected to once.
        """
        parsed, dialect = _checked_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if dialect.name == "sqlite":
            _check_sqlite_file(parsed, shown)
            return
        engine = _create_engine(parsed, dialect)
        try:
            _check_own_tables(engine, shown)
        except SQLAlchemyError as exc:
            raise _open_error(parsed.render_as_string(hide_password=True), dialect, exc) from exc
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
            raise StoreError("the run name is empty; give one with --run")
        if not isinstance(config, dict):
            raise StoreError(f"the run config must be a dict, not {type(config).__name__}")
        config_json = _dumps(config, "the run config")
        wanted = {
            "config": json.loads(config_json),
            "eval_key": eval_key,
            "model": model,
            "metric": metric,
            "seed": int(seed),
        }
        with self._writing() as session:
            run = _find_run(session, name)
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
                _check_same_options(run, wanted)
                run.status = "running"
                run.updated_at = utc_now()
                run.generations_planned = generations_planned
            session.flush()
            return _run_info(run)

    def get_run(self, name: str) -> RunInfo | None:
        with self._sessions() as session:
            run = _find_run(session, name)
            return None if run is None else _run_info(run)

    def list_runs(self) -> list[RunInfo]:
        """All runs, oldest first."""
        with self._sessions() as session:
            return [_run_info(run) for run in session.scalars(select(Run).order_by(Run.id))]

    def set_status(self, run_name: str, status: str) -> None:
        if status not in RUN_STATUSES:
            raise StoreError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}")
        with self._writing() as session:
            run = _require_run(session, run_name)
            run.status = status
            run.updated_at = utc_now()

    def lookup(self, eval_key: str, digests: Sequence[str]) -> dict[str, EvaluationRecord]:
        """The stored evaluations of those digests under `eval_key`; digests never evaluated are absent."""
        found: dict[str, EvaluationRecord] = {}
        with self._sessions() as session:
            for chunk in _chunks(list(dict.fromkeys(digests))):
                query = (
                    select(Candidate, Evaluation)
                    .join(Evaluation, Evaluation.candidate_id == Candidate.id)
                    .where(Evaluation.eval_key == eval_key, Candidate.digest.in_(chunk))
                )
                for candidate, evaluation in session.execute(query):
                    found[candidate.digest] = _evaluation_record(candidate, evaluation)
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
            for chunk in _chunks(list(dict.fromkeys(digests))):
                mine |= claims.claim(session, eval_key, chunk, self.holder, ttl_s)
        return mine

    def release_claims(self, eval_key: str, digests: Sequence[str]) -> None:
        with self._writing() as session:
            for chunk in _chunks(list(dict.fromkeys(digests))):
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
            candidate = _upsert_candidates(session, [failure])[failure.digest]
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
            for chunk in _chunks(list(dict.fromkeys(digests))):
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
        """Store new evaluations and their candidates; ones already stored are left as they are. This store's
        claims on them are released in the same transaction.

        Returns how many evaluations were new. Everything is checked before anything is written, and the whole
        batch is one transaction, so a bad record or a crash leaves the store as it was.
        """
        first: dict[str, EvaluationRecord] = {}
        for record in records:
            first.setdefault(record.digest, record)
        unique = list(first.values())
        rows = [_evaluation_row(record) for record in unique]
        with self._writing() as session:
            claims.release(session, eval_key, [record.digest for record in unique], self.holder)
            candidates = _upsert_candidates(session, unique)
            stored = _evaluated_ids(session, eval_key, [candidate.id for candidate in candidates.values()])
            new = [
                Evaluation(candidate_id=candidates[record.digest].id, eval_key=eval_key, **row)
                for record, row in zip(unique, rows, strict=True)
                if candidates[record.digest].id not in stored
            ]
            session.add_all(new)
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
            "population": _dumps(list(population), "the population"),
            "archive": _dumps(list(archive), "the archive"),
            "hypervolume": _real(hypervolume, "hypervolume"),
            "evaluated": int(evaluated),
            "memo_hits": int(memo_hits),
            "wall_time_s": _real(wall_time_s, "wall_time_s"),
            "confirmed": int(confirmed),
            "images": None if images is None else int(images),
        }
        with self._writing() as session:
            run = _require_run(session, run_name)
            exists = session.scalar(select(Generation.id).where(Generation.run_id == run.id, Generation.index == index))
            if exists is None:
                session.add(Generation(run_id=run.id, index=index, **row))
            run.generations_done = max(run.generations_done, index + 1)
            run.updated_at = utc_now()
            return exists is None

    def generations(self, run_name: str) -> list[GenerationRecord]:
        """The run's stored generations in index order."""
        with self._sessions() as session:
            run = _require_run(session, run_name)
            query = select(Generation).where(Generation.run_id == run.id).order_by(Generation.index)
            return [_generation_record(generation) for generation in session.scalars(query)]


def _checked_url(url: str) -> tuple[URL, type[Dialect]]:
    """Parse `url` and check its driver and (for SQLite) its path, without connecting or creating anything."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(
            f"cannot parse database URL {_redact(url)!r}; use e.g. 'sqlite:///ecad.db' or "
            "'postgresql+psycopg://user@host/dbname'"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError as exc:
        raise StoreError(
            f"cannot open database {shown!r}: unknown database type '{parsed.drivername}'; "
            "use a SQLAlchemy URL such as 'sqlite:///ecad.db'"
        ) from exc
    if dialect.is_async:
        raise StoreError(
            f"cannot open database {shown!r}: async driver '{dialect.driver}' is not supported; "
            f"use a synchronous one, e.g. '{dialect.name}://'"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = _INSTALL_HINT.get(dialect.driver, f"install the Python package of driver '{dialect.driver}'")
        raise StoreError(f"cannot open database {shown!r}: driver '{dialect.driver}' is not installed; {hint}") from exc
    if dialect.name == "sqlite":
        _check_sqlite_path(parsed, shown)
    return parsed, dialect


def _check_sqlite_path(url: URL, shown: str) -> None:
    """SQLite creates the file but not its folder: check the folder here so that the error says what to do."""
    path = _sqlite_file(url)
    if path is None:
        return
    if path.is_dir():
        raise StoreError(f"cannot open database {shown!r}: '{path}' is a folder; give a file path")
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open database {shown!r}: folder '{path.parent}' does not exist; create it first "
            "(the store does not create folders)"
        )


def _sqlite_file(url: URL) -> Path | None:
    """The file of an SQLite URL; None for in-memory and URI databases."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("uri") in ("true", "1"):
        return None
    return Path(database)


def _sqlite_exists(url: URL) -> bool:
    path = _sqlite_file(url)
    return path is None or path.exists()


def _check_sqlite_file(url: URL, shown: str) -> None:
    """An existing SQLite file must be a database whose `ecad_` tables are ours; read-only, so it stays as it is."""
    path = _sqlite_file(url)
    if path is None or not path.exists():
        return
    path = path.resolve()
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True))
    try:
        _check_own_tables(engine, shown)
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise StoreError(f"cannot open database {shown!r}: {reason}; give the path of an SQLite database file") from exc
    finally:
        engine.dispose()


def _check_own_tables(engine: Engine, shown: str) -> bool:
    """Refuse a database whose tables carry our names but not our columns (another tool's, or damaged), or
    whose schema revision is newer than this version knows. Returns whether our tables are there.

    Other tables are fine (one database can be shared with Optuna and others), and so is a database with
    none of ours yet; but either all our tables are there, each with the columns every version had (a
    column added by a later revision is nullable or has a default, and a table added later says so in its
    `info`, so older databases may lack them), or none.
    """
    inspector = inspect(engine)
    present = set(inspector.get_table_names())
    if migrations.VERSION_TABLE in present:
        with engine.connect() as connection:
            revision = migrations.stored_revision(connection)
        if revision is not None and not migrations.known(revision):
            raise StoreError(
                f"database {shown!r} was written by a newer ecad-search (schema revision {revision}); upgrade "
                "ecad-search to use it"
            )
    ours = Base.metadata.sorted_tables
    found = [table for table in ours if table.name in present]
    if not found:
        return False
    problem = ""
    for table in found:
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        required = [c.name for c in table.columns if not c.nullable and c.server_default is None]
        missing = sorted(name for name in required if name not in columns)
        if missing:
            problem = f"its table {table.name} has no column {', '.join(missing[:4])}"
            break
    absent = [table.name for table in ours if table.name not in present and "added_in" not in table.info]
    if not problem and absent:
        problem = f"it has {found[0].name} but no {absent[0]}"
    if not problem:
        return True
    raise StoreError(
        f"database {shown!r} is not an ecad-search database ({problem}); nothing was written to it: "
        "give another --db, e.g. sqlite:///ecad-search.db"
    )


def _create_engine(url: URL, dialect: type[Dialect]) -> Engine:
    timeout_arg = _TIMEOUT_ARG.get(dialect.driver)
    connect_args = {timeout_arg: CONNECT_TIMEOUT_S} if timeout_arg and timeout_arg not in url.query else {}
    # A long search may idle for hours between generations: ping server connections before reuse.
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=dialect.name != "sqlite")
    if dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _open_error(shown: str, dialect: type[Dialect], exc: SQLAlchemyError) -> StoreError:
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300].rstrip(".")
    if dialect.name == "sqlite":
        fix = "check the path is a writable SQLite database file"
    else:
        fix = "check the server is running and the URL's host, port, user, password and database name"
    return StoreError(f"cannot open database {shown!r}: {reason}; {fix}")


def _redact(url: str) -> str:
    """Hide a password in a URL that could not be parsed, so it never reaches an error message or log."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _dumps(value: Any, what: str) -> str:
    """Canonical plain JSON (sorted keys, no NaN), so equal values give equal text on every platform."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not plain JSON: {exc}") from exc


def _real(value: float, what: str) -> float:
    """A float the database stores exactly; NaN is refused because SQLite would silently store it as NULL."""
    number = float(value)
    if math.isnan(number):
        raise StoreError(f"{what} is NaN; the store keeps only real numbers or infinities")
    return number


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def _find_run(session: Session, name: str) -> Run | None:
    return session.scalar(select(Run).where(Run.name == name))


def _require_run(session: Session, name: str) -> Run:
    run = _find_run(session, name)
    if run is None:
        raise StoreError(f"no run named {name!r} in this database; list the runs to see their names")
    return run


def _check_same_options(run: Run, wanted: dict[str, Any]) -> None:
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
        "pick another --run name, or repeat the options it was started with to resume it"
    )


def _upsert_candidates(session: Session, records: Sequence[EvaluationRecord | FailureRecord]) -> dict[str, Candidate]:
    """The candidates of `records` by digest, inserting the missing ones; a digest's genome must never change."""
    candidates: dict[str, Candidate] = {}
    for chunk in _chunks([record.digest for record in records]):
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


def _evaluated_ids(session: Session, eval_key: str, candidate_ids: list[int]) -> set[int]:
    ids: set[int] = set()
    for chunk in _chunks(candidate_ids):
        query = select(Evaluation.candidate_id).where(
            Evaluation.eval_key == eval_key, Evaluation.candidate_id.in_(chunk)
        )
        ids.update(session.scalars(query))
    return ids


def _evaluation_row(record: EvaluationRecord) -> dict[str, Any]:
    """Check one record and turn it into column values (no writes, so a bad batch fails before any of it is stored)."""
    if not record.digest:
        raise StoreError("an evaluation record has an empty digest")
    if record.policy is not None:
        _check_policy(record)
    elif not record.genome or set(record.genome) - {"0", "1"}:
        raise StoreError(f"the genome of {record.digest} must be a non-empty string of '0' and '1' characters")
    if not isinstance(record.scores, dict):
        raise StoreError(f"the scores of {record.digest} must be a dict, not {type(record.scores).__name__}")
    return {
        "quality_loss": _real(record.quality_loss, f"quality_loss of {record.digest}"),
        "cost": _real(record.cost, f"cost of {record.digest}"),
        "macs": _real(record.macs, f"macs of {record.digest}"),
        "latency_s": None if record.latency_s is None else _real(record.latency_s, f"latency_s of {record.digest}"),
        "scores": _dumps(record.scores, f"the scores of {record.digest}"),
        "wall_time_s": _real(record.wall_time_s, f"wall_time_s of {record.digest}"),
    }


def _check_policy(record: EvaluationRecord) -> None:
    """A policy candidate: no genome, and a JSON object naming the policy and its knobs."""
    if record.genome:
        raise StoreError(f"candidate {record.digest} has both a genome and a policy; give one")
    try:
        document = json.loads(cast(str, record.policy))
    except (TypeError, ValueError):
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("policy"), str):
        raise StoreError(f"the policy of {record.digest} must be a JSON object naming the policy and its knobs")


def _run_info(run: Run) -> RunInfo:
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


def _evaluation_record(candidate: Candidate, evaluation: Evaluation) -> EvaluationRecord:
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


def _generation_record(generation: Generation) -> GenerationRecord:
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
