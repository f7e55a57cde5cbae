"""Schedule files: our versioned JSON (read and write), ECAD's files (read), cache-dit configs (write); policy
files (`formats.policy`) name an online policy and its knobs."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import read_text, write_atomic
from ..schedule import CacheSchedule, ScheduleError
from .cache_dit import to_cache_dit
from .ecad import from_ecad, is_ecad
from .native import dumps, from_dict, schema, to_dict

__all__ = ["dumps", "load_schedule", "save_schedule", "schema", "to_cache_dit", "to_dict"]


def load_schedule(path: str | Path) -> CacheSchedule:
    """Read a schedule file in our format or ECAD's; any problem is a one-line `ScheduleError`."""
    path = Path(path)
    text = read_text(path, "schedule file", "an ecad-search or ECAD schedule JSON file", ScheduleError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ScheduleError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if is_ecad(data):
        return from_ecad(data, source=str(path))
    if isinstance(data, dict) and data.get("format") == "ecad-search.schedule":
        return from_dict(data, source=str(path))
    if isinstance(data, dict) and data.get("format") == "ecad-search.policy":
        raise ScheduleError(f"{path} names an online policy, not a schedule: give it with --policy {path}")
    raise ScheduleError(
        f'{path} is neither an ecad-search schedule ("format": "ecad-search.schedule") nor an ECAD file '
        '(top-level "cache_schedule")'
    )


def save_schedule(schedule: CacheSchedule, path: str | Path) -> Path:
    """Write our JSON format atomically (a partly written file never appears under `path`)."""
    return write_atomic(path, dumps(schedule))
