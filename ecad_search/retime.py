"""Carry a schedule to another step count.

Each new step takes the decisions of the old step nearest to it in the noise schedule (the scheduler's
timesteps, not the step index: a 20-step and a 28-step run of the same scheduler do not space their steps
alike), so the computes stay where the denoising needs them and the compute share stays about what it was.
The mapping travels in the file's provenance (`retimed`), from the source's digest to every new step's old
step, so a converted schedule says what it is and can be checked against its source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .schedule import CacheSchedule, ScheduleError


def step_map(source: Sequence[float], target: Sequence[float]) -> list[int]:
    """For each target position, the index of the source position nearest to it (the earlier one on a tie).

    Refuses a target position further outside the source's span than one source step: the two noise
    schedules do not overlap there, so no old decision speaks for it."""
    old = np.asarray(source, dtype=float)
    if len(old) < 2 or not (np.all(np.diff(old) < 0) or np.all(np.diff(old) > 0)):
        raise ScheduleError("the source noise positions must be at least two, strictly in one direction")
    new = np.asarray(target, dtype=float)
    widest_gap = float(np.abs(np.diff(old)).max())
    low, high = float(old.min()), float(old.max())
    outside = np.flatnonzero((new < low - widest_gap) | (new > high + widest_gap))
    if outside.size:
        j = int(outside[0])
        raise ScheduleError(
            f"new step {j} sits at noise position {new[j]:g}, outside the schedule's [{low:g}, {high:g}] by more "
            "than one step: the noise schedules do not overlap; use the scheduler the schedule was made for"
        )
    return np.abs(new[:, None] - old[None, :]).argmin(axis=1).tolist()


def retime(schedule: CacheSchedule, source: Sequence[float], target: Sequence[float], *, by: str) -> CacheSchedule:
    """`schedule` at `len(target)` steps: new step j follows old step `step_map(source, target)[j]`. `by`
    names the positions (e.g. "timesteps of DPMSolverMultistepScheduler") for the provenance."""
    if len(source) != schedule.num_steps:
        raise ScheduleError(
            f"the schedule has {schedule.num_steps} steps but {len(source)} source noise positions were given"
        )
    steps = step_map(source, target)
    if steps[0] != 0:
        raise ScheduleError(
            f"the first new step maps to old step {steps[0]}, not to step 0: the noise schedules start apart"
        )
    masks = {group.name: schedule.masks[group.name][steps] for group in schedule.groups}
    retimed: dict[str, Any] = {
        "source": schedule.digest(),
        "source_name": schedule.name,
        "from_steps": schedule.num_steps,
        "to_steps": len(target),
        "by": by,
        "source_steps": steps,
    }
    name = f"{schedule.name or 'schedule'}@{len(target)}"
    provenance = {**schedule.provenance, "retimed": retimed}
    return replace(schedule, masks=masks, name=name, metrics={}, provenance=provenance)


def retime_for_model(schedule: CacheSchedule, spec: Any, steps: int) -> CacheSchedule:
    """`schedule` at `steps` steps of `spec`'s own scheduler, the positions set as its pipeline sets them."""
    from .models import get_family

    family = get_family(spec)
    scheduler = family.load_scheduler(spec)
    source = family.noise_positions(spec, scheduler, schedule.num_steps)
    target = family.noise_positions(spec, scheduler, steps)
    return retime(schedule, source, target, by=f"timesteps of {type(scheduler).__name__}")
