"""What crosses the store's boundary: plain frozen dataclasses (never ORM objects, so callers cannot trigger lazy
loads on a closed session), the run statuses, and the one error a user can fix."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

RUN_STATUSES = ("running", "finished", "interrupted", "failed")


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
