"""The bounds of every number a user gives, checked in one place before anything runs or is written.

Each check fails with a one-line `FieldError` that names the field, the value and the range, so the message is
its own fix (the command line names the flag instead). The bounds are what the tool can do, not what is
sensible: a search over more than `MAX_SCHEDULE_STEPS` steps or a population above `MAX_POPULATION` is refused
because it would not finish or not fit in memory (pymoo's duplicate elimination compares every pair of a
population), not because it is unusual.
"""

from __future__ import annotations

import math

from .errors import FieldError

MAX_SCHEDULE_STEPS = 100
MAX_GENERATE_STEPS = 1000
MAX_POPULATION = 1000
MAX_WORKERS = 4096
# MiB an evaluation may keep for shared prefixes (1 TiB: beyond any accelerator's memory).
MAX_PREFIX_MIB = 2**20
# What to install for workers and cluster jobs.
RAY_EXTRA = "pip install 'ecad-search[cluster]'"
MAX_GENERATIONS = 10_000
MAX_IMAGES_PER_PROMPT = 100
MAX_BATCH_SIZE = 4096
MAX_GUIDANCE = 100.0
MAX_SEED = 2**31 - 1 - MAX_IMAGES_PER_PROMPT
# Above this many images per candidate, the search states what a generation will cost before it starts.
LARGE_IMAGES_PER_CANDIDATE = 500


def check_range(field: str, value: int, low: int, high: int, why: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        reason = f" ({why})" if why else ""
        raise FieldError(f"`{field}` must be a whole number from {low} to {high}{reason}, got {value}")
    return value


def check_schedule_steps(steps: int) -> int:
    why = "a schedule reuses outputs in steps after the first; the search space grows with every step"
    return check_range("steps", steps, 2, MAX_SCHEDULE_STEPS, why)


def check_generate_steps(steps: int) -> int:
    return check_range("steps", steps, 1, MAX_GENERATE_STEPS, "diffusion schedulers have 1000 training timesteps")


def check_seed(seed: int) -> int:
    return check_range("seed", seed, 0, MAX_SEED)


def check_number(field: str, value: float, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise FieldError(f"`{field}` must be a finite number from {low:g} to {high:g}, got {value}")
    if not low <= value <= high:
        raise FieldError(f"`{field}` must be from {low:g} to {high:g}, got {value:g}")
    return float(value)


def check_guidance(guidance: float) -> float:
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        raise FieldError(f"`guidance` must be a finite number from 0 to {MAX_GUIDANCE:g}, got {guidance}")
    return float(guidance)
