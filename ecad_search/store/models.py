"""ORM tables of the search store.

Every table is prefixed `ecad_` so that one database can be shared with Optuna or other tools. The schema
changes only through the Alembic revisions in `migrations/`, which `Store` applies when it opens a database.
Only plain SQL types are used (JSON goes into Text columns, written by the repository with
`json.dumps(sort_keys=True)`), so the database stays readable by any SQL client and never holds pickled
objects. All floats are `Double` (8-byte REAL on SQLite, DOUBLE PRECISION on PostgreSQL): the driver replays a
search from stored values and needs them bit-exact.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    DateTime,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so a later migration tool (Alembic) can refer to them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as naive UTC and read back as aware UTC.

    SQLite drops time zones, PostgreSQL keeps them: normalising on both sides makes every dialect return the same
    aware value, so callers can compare and format times without knowing where they were stored.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store timestamps must be timezone-aware")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """One named search; resuming with the same name continues it."""

    __tablename__ = "ecad_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    config: Mapped[str] = mapped_column(Text)
    eval_key: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(255))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    generations_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    tool_version: Mapped[str] = mapped_column(String(64))
    # Added by revision 0003: how many generations the latest invocation runs to.
    generations_planned: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Candidate(Base):
    """A mask, or an online policy with its knobs, shared by all runs: its evaluations are reused whenever the
    evaluation settings match.

    For a mask, `compute_fraction` is the share of '1' (computed) genes in `genome`, which leaves out step 0
    (always computed), so it is a little below the schedule's own `compute_fraction`; for a policy (`policy`
    holds its JSON document, `genome` is empty) it is the MAC fraction it ran when first scored. It is stored
    for queries and plots only.
    """

    __tablename__ = "ecad_candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    genome: Mapped[str] = mapped_column(Text)
    genome_length: Mapped[int] = mapped_column(Integer)
    compute_fraction: Mapped[float] = mapped_column(Double)
    policy: Mapped[str | None] = mapped_column(Text, nullable=True)


class Evaluation(Base):
    """The measured objectives of one candidate under one set of evaluation settings (the memo)."""

    __tablename__ = "ecad_evaluations"
    __table_args__ = (UniqueConstraint("candidate_id", "eval_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("ecad_candidates.id"))
    eval_key: Mapped[str] = mapped_column(String(128), index=True)
    quality_loss: Mapped[float] = mapped_column(Double)
    cost: Mapped[float] = mapped_column(Double)
    macs: Mapped[float] = mapped_column(Double)
    latency_s: Mapped[float | None] = mapped_column(Double, nullable=True)
    scores: Mapped[str] = mapped_column(Text)
    wall_time_s: Mapped[float] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Failure(Base):
    """A candidate that could not be scored under one set of evaluation settings: it killed its worker (or
    raised) on every try. A resumed search counts it as infeasible and never tries it again."""

    __tablename__ = "ecad_failures"
    # Added by a later revision: a database written before it lacks the table until it is migrated.
    __table_args__ = (UniqueConstraint("candidate_id", "eval_key"), {"info": {"added_in": "0003"}})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("ecad_candidates.id"))
    eval_key: Mapped[str] = mapped_column(String(128), index=True)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Claim(Base):
    """A driver scoring a candidate under one set of evaluation settings right now, so that another driver on
    the same database waits for the result instead of computing it too. `holder` is "host:pid:nonce"; a
    claim lapses at `expires_at` unless its holder renews it, and at once when its holder's process is gone."""

    __tablename__ = "ecad_claims"
    __table_args__ = (UniqueConstraint("digest", "eval_key"), {"info": {"added_in": "0003"}})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    eval_key: Mapped[str] = mapped_column(String(128))
    holder: Mapped[str] = mapped_column(String(255), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Generation(Base):
    """One finished generation of a run: enough to replay the search and to plot its progress.

    `memo_hits` counts the population's masks found in the database (scored before the run looked),
    `evaluated` those scored by the generation, `confirmed` the front entrants re-scored on fresh seeds; the
    rest of the population were duplicates. `images` is what all that generated.
    """

    __tablename__ = "ecad_generations"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("ecad_runs.id"))
    index: Mapped[int] = mapped_column(Integer)
    population: Mapped[str] = mapped_column(Text)
    archive: Mapped[str] = mapped_column(Text)
    hypervolume: Mapped[float] = mapped_column(Double)
    evaluated: Mapped[int] = mapped_column(Integer)
    memo_hits: Mapped[int] = mapped_column(Integer)
    wall_time_s: Mapped[float] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    confirmed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Added by revision 0005: the images the generation generated (calibration, race and confirmation).
    images: Mapped[int | None] = mapped_column(Integer, nullable=True)
