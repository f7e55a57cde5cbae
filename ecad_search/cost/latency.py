"""Latency of a schedule on one device, for `--budget-latency`: a linear model fitted from timed runs.

MACs are the same on every device; seconds are not, and parts of a run that MACs do not see (the scheduler,
the VAE, every reused component's gate and residual, the hooks) take time too. The model splits a run's
seconds per image into a fixed part and one time per computation of each component kind (a group's
component: every block of a group has the same shapes, so the same time). It is fitted on a few probe
schedules, each timed on the device that will serve the schedule:

- every component at every step (the uncached run), and only step 0 (every later step reuses);
- per component kind, that kind at every step and nothing else after step 0.

Being linear in the mask, it keeps the budget search's moves exact: moving a computation along its lane
keeps the predicted latency, as it keeps the MACs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..schedule import CacheSchedule

UNCACHED, STEP_ZERO = "uncached", "step-0-only"


def kinds(template: CacheSchedule) -> list[tuple[str, str]]:
    """The component kinds of a layout: (group, component), in the layout's order."""
    return [(group.name, component) for group in template.groups for component in group.components]


def computations(schedule: CacheSchedule) -> np.ndarray:
    """How many times the schedule computes each component kind (all blocks and steps, step 0 included)."""
    return np.concatenate([mask.sum(axis=(0, 1)) for _, _, mask in schedule.iter_groups()]).astype(float)


def latency_probes(template: CacheSchedule) -> dict[str, CacheSchedule]:
    """The schedules to time, by name: uncached, step 0 only, and each component kind alone after step 0."""
    step_zero = template.with_genome(np.zeros(template.genome_length, dtype=bool), name=STEP_ZERO)
    probes = {UNCACHED: template.with_metadata(name=UNCACHED), STEP_ZERO: step_zero}
    for group in template.groups:
        for position, component in enumerate(group.components):
            masks = {name: mask.copy() for name, mask in step_zero.masks.items()}
            masks[group.name][1:, :, position] = True
            name = f"only-{group.name}.{component}"
            probes[name] = step_zero.with_metadata(masks=masks, name=name)
    return probes


@dataclass(frozen=True)
class LatencyModel:
    """Seconds per image = `fixed` + Σ over component kinds of computations × `per_computation`."""

    kinds: tuple[tuple[str, str], ...]
    fixed: float
    per_computation: tuple[float, ...]

    @classmethod
    def fit(cls, template: CacheSchedule, seconds: Mapping[str, float]) -> LatencyModel:
        """Least squares over the probes' seconds per image (`latency_probes` names), times kept ≥ 0."""
        probes = latency_probes(template)
        missing = sorted(set(probes) - set(seconds))
        if missing:
            raise ValueError(f"no timing for the latency probes {', '.join(missing)}")
        names = sorted(probes)
        design = np.array([[1.0, *computations(probes[name])] for name in names])
        solution, *_ = np.linalg.lstsq(design, np.array([seconds[name] for name in names]), rcond=None)
        return cls(tuple(kinds(template)), float(solution[0]), tuple(max(float(t), 0.0) for t in solution[1:]))

    def seconds(self, schedule: CacheSchedule) -> float:
        """Predicted seconds per image."""
        return self.fixed + float(computations(schedule) @ np.array(self.per_computation))
