"""Persistence of the search: runs, the evaluation memo shared across runs, and generation history.

Any SQLAlchemy URL works (SQLite by default); tables are prefixed `ecad_` so the database can be shared.
"""

from .records import (
    RUN_STATUSES,
    EvaluationRecord,
    FailureRecord,
    GenerationRecord,
    RunInfo,
    StoreError,
    signals_held,
)
from .repository import Store

__all__ = [
    "RUN_STATUSES",
    "EvaluationRecord",
    "FailureRecord",
    "GenerationRecord",
    "RunInfo",
    "Store",
    "StoreError",
    "signals_held",
]
