"""Schedule files: our versioned JSON (read and write), ECAD's files (read), cache-dit configs (write); policy
files (`formats.policy`) name an online policy and its knobs."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import read_text, write_atomic
from ..schedule import CacheSchedule, ScheduleError
from .cache_dit import cache_dit_yaml, to_cache_dit
from .ecad import from_ecad, is_ecad
from .native import dumps, from_dict, schema, to_dict

__all__ = [
    "cache_dit_yaml",
    "dumps",
    "load_schedule",
    "save_schedule",
    "schema",
    "shipped_schedules",
    "to_cache_dit",
    "to_dict",
]


# The schedules that ship in the package, loadable by name: "pixart-alpha/fora-3".
SHIPPED = Path(__file__).resolve().parent.parent / "schedules"


def shipped_schedules() -> list[str]:
    """The names of the shipped schedules, e.g. "pixart-alpha/fora-3"."""
    return sorted(str(path.relative_to(SHIPPED).with_suffix("")) for path in SHIPPED.glob("*/*.json"))


def load_schedule(path: str | Path) -> CacheSchedule:
    """Read a schedule file in our format or ECAD's, or a shipped schedule by name ("pixart-alpha/fora-3",
    `shipped_schedules()`); any problem is a one-line `ScheduleError`."""
    path = _shipped(Path(path))
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
        raise ScheduleError(f"{path} names an online policy, not a schedule: give it as the `policy`")
    raise ScheduleError(
        f'{path} is neither an ecad-search schedule ("format": "ecad-search.schedule") nor an ECAD file '
        '(top-level "cache_schedule")'
    )


def _shipped(path: Path) -> Path:
    """A shipped schedule's file for a bare name that is no file here ("pixart-alpha/fora-3"), else `path`."""
    if path.suffix or path.exists() or path.is_absolute() or len(path.parts) != 2:
        return path
    shipped = SHIPPED / path.with_suffix(".json")
    return shipped if shipped.is_file() else path


def save_schedule(schedule: CacheSchedule, path: str | Path) -> Path:
    """Write our JSON format atomically (a partly written file never appears under `path`)."""
    return write_atomic(path, dumps(schedule))
