"""From the calibration pass's Gram matrices to schedules: fill errors, the cost tensor and the dynamic program.

A lane that skips step j fills it from the steps it computed before: reuse from the last one, i; a first-order
forecast from the last two, k < i (`runtime.forecast`: Y_i + (Y_i − Y_k)·(j − i)/(i − k)). Either fill is a
linear combination of the lane's outputs, so its squared error is a quadratic form in the lane's Gram matrix.
The error a lane adds over a run is the sum over its skipped steps, and depends only on the computes just
before each: for reuse on the segment (i, next compute), for the forecast on (k, i, next compute). That sum,
`segment[l, k, i, n]` (k = `NONE`: i is the lane's first compute, where a forecast has one term and reuses),
is the path-aware cost tensor; it needs `lanes × (steps + 1)² × steps` numbers (digits-28: 0.74 M).

Lanes in step cost the same for the same number of computes, so for them `plan_counts` finds the computes of
least error for every count exactly, in O(steps⁴). For lanes each on its own steps, given a multiplier λ
(error per MAC), each lane's computes minimise `weight · error + λ · MACs` by dynamic programming over its
last two computes, in O(steps³) per lane, step 0 always computing; the lanes are independent given λ, so
sweeping λ traces a front at once (its lower convex hull only). The forecast's own arithmetic (a few
multiply-adds per element) is left out of λ's cost here; the schedules' MACs count it exactly.
A second-order forecast would need the last three computes (O(steps⁴) per lane) and is not constructed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The fills construction builds schedules for, by Taylor order.
CONSTRUCTED_FILLS = {"reuse": 0, "taylor1": 1}


def fill_errors(gram: np.ndarray, order: int) -> np.ndarray:
    """Per lane, the squared error of filling step j from computes k < i < j (`[l, k, i, j]`; k = `steps`:
    no earlier compute, so the fill reuses Y_i). Order 0 ignores k. Entries outside k < i < j are 0."""
    lanes, steps, _ = gram.shape
    diag = np.einsum("laa->la", gram)
    # Reuse: ‖Y_i − Y_j‖².
    reuse = diag[:, :, None] + diag[:, None, :] - 2 * gram
    errors = np.zeros((lanes, steps + 1, steps, steps))
    errors[:] = reuse[:, None, :, :]
    if order == 0:
        return _after(errors)
    k, i, j = np.meshgrid(np.arange(steps), np.arange(steps), np.arange(steps), indexing="ij")
    valid = (k < i) & (i < j)
    s = np.where(valid, (j - i) / np.where(k < i, i - k, 1), 0.0)
    g = lambda a, b: gram[:, a, b]  # noqa: E731 - the quadratic form reads better with it
    # ‖(1 + s)·Y_i − s·Y_k − Y_j‖².
    forecast = (
        (1 + s) ** 2 * g(i, i) + s**2 * g(k, k) + g(j, j)
        - 2 * s * (1 + s) * g(i, k) - 2 * (1 + s) * g(i, j) + 2 * s * g(k, j)
    )  # fmt: skip
    errors[:, :steps] = np.where(valid, forecast, 0.0)
    return _after(errors)


def _after(errors: np.ndarray) -> np.ndarray:
    """Keep only j > i (and k < i where k is a step): the steps a compute at i can fill."""
    steps = errors.shape[2]
    i, j = np.meshgrid(np.arange(steps), np.arange(steps), indexing="ij")
    errors = np.where((j > i)[None, None], errors, 0.0)
    k = np.arange(steps + 1)[:, None, None]
    ordered = (k < i[None]) | (k == steps)
    return np.where(ordered[None], np.maximum(errors, 0.0), 0.0)


def segment_costs(errors: np.ndarray) -> np.ndarray:
    """`[l, k, i, n]`: the error of filling steps i+1 … n−1 from computes (k, i); n = steps is the run's end."""
    lanes, kinds, steps, _ = errors.shape
    totals = np.zeros((lanes, kinds, steps, steps + 1))
    # Steps i+1 … n−1: the running sum of j < n (entries at j ≤ i are 0).
    totals[..., 1:] = np.cumsum(errors, axis=-1)
    return totals


@dataclass(frozen=True)
class LanePlan:
    """One multiplier's choice: per lane, the steps it computes (a boolean (lanes, steps) array), and the
    predicted weighted error of each lane."""

    computes: np.ndarray
    errors: np.ndarray


def plan_lanes(segments: np.ndarray, weights: np.ndarray, macs: np.ndarray, multiplier: float) -> LanePlan:
    """Each lane's computes minimising `weight · error + multiplier · MACs`, step 0 computing, by dynamic
    programming over (last compute n, compute before it i; i = `steps`: none)."""
    lanes, _, steps, _ = segments.shape
    none = steps
    cost = weights[:, None, None, None] * segments
    charge = multiplier * macs
    # best[l, n, i]: least cost of steps 0 … n with computes at i and n and none between (i = none: n is first).
    best = np.full((lanes, steps, steps + 1), np.inf)
    back = np.full((lanes, steps, steps + 1), -1, dtype=int)
    best[:, 0, none] = charge
    for n in range(1, steps):
        # Reaching a compute at n from state (i, k): cost[l, k, i, n]; over i < n and every k.
        arriving = best[:, :n, :] + np.transpose(cost[:, :, :n, n], (0, 2, 1))
        back[:, n, :n] = np.argmin(arriving, axis=2)
        best[:, n, :n] = np.min(arriving, axis=2) + charge[:, None]
    ending = best + np.transpose(cost[:, :, :, steps], (0, 2, 1))
    flat = ending.reshape(lanes, -1).argmin(axis=1)
    last, previous = np.unravel_index(flat, ending.shape[1:])
    computes = np.zeros((lanes, steps), dtype=bool)
    errors = np.zeros(lanes)
    for lane in range(lanes):
        n, i = int(last[lane]), int(previous[lane])
        errors[lane] = cost[lane, i, n, steps]
        computes[lane, n] = True
        while i != none:
            computes[lane, i] = True
            k = int(back[lane, n, i])
            errors[lane] += cost[lane, k, i, n]
            n, i = i, k
    return LanePlan(computes, errors)


def plan_counts(segments: np.ndarray) -> dict[int, tuple[np.ndarray, float]]:
    """For one lane's (or one bundle's) `segments[k, i, n]`, the computes of least error for every number of
    computed steps: `{count: (boolean steps array, error)}`, step 0 computing. Exact, where a multiplier's
    sweep finds only the counts on the lower convex hull of error against count; O(steps⁴), by dynamic
    programming over (computes so far, last compute n, compute before it i; i = `steps`: none)."""
    _, steps, _ = segments.shape
    none = steps
    best = np.full((steps + 1, steps, steps + 1), np.inf)
    back = np.full((steps + 1, steps, steps + 1), -1, dtype=int)
    best[1, 0, none] = 0.0
    for n in range(1, steps):
        # Reaching the c-th compute at n from state (c − 1, i, k): segments[k, i, n].
        arriving = best[:-1, :n, :] + segments[:, :n, n].T[None]
        back[1:, n, :n] = np.argmin(arriving, axis=2)
        best[1:, n, :n] = np.min(arriving, axis=2)
    ending = best + segments[:, :, steps].T[None]
    plans = {}
    for count in range(1, steps + 1):
        n, i = np.unravel_index(int(np.argmin(ending[count])), ending[count].shape)
        error = float(ending[count, n, i])
        if not np.isfinite(error):
            continue
        computes = np.zeros(steps, dtype=bool)
        computes[n] = True
        for c in range(count, 1, -1):
            computes[i] = True
            n, i = i, int(back[c, n, i])
        plans[count] = (computes, error)
    return plans


def lane_error(errors: np.ndarray, computes: list[int] | np.ndarray, order: int) -> float:
    """One lane's error for a set of computes, added up step by step from `fill_errors` (no segments, no
    program): what the dynamic program's choice is checked against."""
    steps = errors.shape[-1]
    chosen = sorted(int(s) for s in (np.flatnonzero(computes) if isinstance(computes, np.ndarray) else computes))
    total = 0.0
    for j in range(steps):
        if j in chosen:
            continue
        before = [s for s in chosen if s < j]
        i = before[-1]
        k = before[-2] if order and len(before) > 1 else steps
        total += float(errors[k, i, j])
    return total
