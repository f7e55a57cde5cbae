"""Schedules built, not searched: one calibration pass, a fitted error model, a dynamic program per lane.

1. The calibration pass (`lanes.py`) runs the uncached model on the construction split (the calibration
   prompts at `CONSTRUCTION_SEEDS` seeds) and keeps each lane's Gram matrix over the steps.
2. The error model: a skipped step's fill error per lane comes from the Gram matrix (`program.py`); how those
   errors add up in the final image is fitted, not assumed. Lanes are grouped by component and depth
   (`weight_groups`); for each group one probe schedule skips that group's lanes on every other step, is
   scored on the construction split like any candidate (stored, so never paid twice), and the group's weight
   is the probe's mean squared image error over its predicted lane error.
3. Construction: for each fill and each multiplier of a log-spaced sweep, every lane's computes come from the
   dynamic program. Two layouts are built: lanes in step (one program on the weighted sum of every lane's
   costs: FORA's and TaylorSeer's layout with the steps chosen) and free (each lane its own steps, the budget
   shared by the multiplier). Each layout's predicted front (exact MACs, forecast arithmetic included,
   against predicted error) is kept: the additive model ranks schedules within a layout well, and images
   decide between layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..schedule import CacheSchedule
from .program import CONSTRUCTED_FILLS, fill_errors, lane_error, plan_lanes, segment_costs

# Seeds per calibration prompt in the calibration pass and the probes.
CONSTRUCTION_SEEDS = 2
# Depth bands per component whose lanes share a fitted weight.
DEPTH_BANDS = 4
# Multipliers in the sweep.
MULTIPLIERS = 96
# How lanes may differ: all on the same steps, or each on its own (docs/research/construct.md: in step wins
# at 50, 35 and 25 % MACs on digits; free adds schedules at the ends of the front).
LAYOUTS = ("in step", "free")


def lane_keys(template: CacheSchedule) -> list[tuple[int, int, int]]:
    """Lanes in schedule order (group, block, component), as the calibration pass numbers them."""
    return [
        (g, b, c)
        for g, group, _ in template.iter_groups()
        for b in range(group.num_blocks)
        for c in range(len(group.components))
    ]


def weight_groups(template: CacheSchedule) -> dict[str, list[int]]:
    """Lanes sharing a fitted weight: one component of one group in one of `DEPTH_BANDS` bands of depth."""
    bands: dict[str, list[int]] = {}
    for lane, (g, b, c) in enumerate(lane_keys(template)):
        group = template.groups[g]
        band = b * min(DEPTH_BANDS, group.num_blocks) // group.num_blocks
        bands.setdefault(f"{group.name}.{group.components[c]}.{band}", []).append(lane)
    return bands


def with_lanes(template: CacheSchedule, computes: np.ndarray, fill: str, **meta: Any) -> CacheSchedule:
    """The schedule whose lane l computes on the steps `computes[l]` marks."""
    masks, lane = {}, 0
    for _, group, mask in template.iter_groups():
        width = mask[0].size
        block = computes[lane : lane + width].T.reshape(mask.shape)
        masks[group.name] = block
        lane += width
    return template.with_metadata(masks=masks, fill=fill, **meta)


def probe(template: CacheSchedule, lanes: list[int], name: str) -> CacheSchedule:
    """The probe of one weight group: its lanes skip every odd step (reuse), every other lane computes."""
    steps = template.num_steps
    computes = np.ones((len(lane_keys(template)), steps), dtype=bool)
    computes[np.ix_(lanes, np.arange(1, steps, 2))] = False
    return with_lanes(template, computes, "reuse", name=f"probe-{name}")


@dataclass(frozen=True)
class ErrorModel:
    """The calibration pass and the fitted weights: what construction needs, and what its report shows.

    `gram`: (lanes, steps, steps); `weights`: per lane; `probes`: per weight group, the probe's measured
    mean squared image error and its predicted (unweighted) lane error."""

    gram: np.ndarray
    weights: np.ndarray
    probes: dict[str, tuple[float, float]]

    @classmethod
    def fit(cls, template: CacheSchedule, gram: np.ndarray, measured: dict[str, float]) -> ErrorModel:
        """Weights from the probes' measured image errors (`measured`, by weight group)."""
        reuse = fill_errors(gram, 0)
        groups = weight_groups(template)
        weights = np.zeros(gram.shape[0])
        probes = {}
        for name, lanes in groups.items():
            schedule = probe(template, lanes, name)
            computes = lane_computes(schedule)
            predicted = sum(lane_error(reuse[lane], computes[lane], 0) for lane in lanes)
            probes[name] = (measured[name], predicted)
            weights[lanes] = measured[name] / predicted if predicted > 0 else 0.0
        return cls(gram, weights, probes)

    def to_dict(self) -> dict[str, Any]:
        return {"gram": self.gram.tolist(), "weights": self.weights.tolist(), "probes": self.probes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorModel:
        probes = {name: (float(m), float(p)) for name, (m, p) in data["probes"].items()}
        return cls(np.asarray(data["gram"], dtype=float), np.asarray(data["weights"], dtype=float), probes)


@dataclass(frozen=True)
class Constructed:
    """A constructed schedule, its relative MACs and the error the model predicts for it."""

    schedule: CacheSchedule
    cost: float
    predicted: float


def construct_front(
    template: CacheSchedule,
    model: ErrorModel,
    lane_macs: np.ndarray,
    relative_macs: Callable[[CacheSchedule], float],
    fills: tuple[str, ...] = tuple(CONSTRUCTED_FILLS),
) -> list[Constructed]:
    """Each layout's predicted front over both fills, in layout order (in step first: measured best), each
    cheapest first. The additive error model ranks schedules within a layout; it underrates what lanes out of
    step cost (docs/research/construct.md), so images decide between layouts."""
    positive = model.weights[model.weights > 0]
    scale = (float(np.median(positive)) if positive.size else 1.0) * float(np.mean(np.diagonal(model.gram, 0, 1, 2)))
    multipliers = np.logspace(-4, 3, MULTIPLIERS) * scale / float(np.mean(lane_macs))
    weighted = {
        fill: segment_costs(fill_errors(model.gram, CONSTRUCTED_FILLS[fill])) * model.weights[:, None, None, None]
        for fill in fills
    }
    fronts: list[Constructed] = []
    for layout in LAYOUTS:
        owner = _bundle_of_lane(len(lane_macs), layout)
        bundles = int(owner.max()) + 1
        macs = np.bincount(owner, weights=lane_macs, minlength=bundles)
        built: dict[str, Constructed] = {}
        for fill, segments in weighted.items():
            bundled = np.zeros((bundles, *segments.shape[1:]))
            np.add.at(bundled, owner, segments)
            for multiplier in multipliers:
                plan = plan_lanes(bundled, np.ones(bundles), macs, float(multiplier))
                computes = plan.computes[owner]
                provenance = {"method": "constructed", "layout": layout, "fill": fill, "multiplier": float(multiplier)}
                name = f"constructed-{fill}-{layout.replace(' ', '-')}"
                schedule = with_lanes(template, computes, fill, name=name, provenance=provenance)
                built.setdefault(schedule.digest(), Constructed(schedule, relative_macs(schedule), plan.errors.sum()))
        fronts += _predicted_front(list(built.values()))
    unique: dict[str, Constructed] = {}
    for constructed in fronts:
        unique.setdefault(constructed.schedule.digest(), constructed)
    return list(unique.values())


def _bundle_of_lane(lanes: int, layout: str) -> np.ndarray:
    """Per lane, the bundle whose steps it shares in a layout: one bundle of all lanes, or each its own."""
    return np.zeros(lanes, dtype=int) if layout == "in step" else np.arange(lanes)


def lane_computes(schedule: CacheSchedule) -> np.ndarray:
    """(lanes, steps): which steps each lane computes, lanes in `lane_keys` order."""
    return np.concatenate([mask.reshape(mask.shape[0], -1).T for _, _, mask in schedule.iter_groups()])


def _predicted_front(candidates: list[Constructed]) -> list[Constructed]:
    front: list[Constructed] = []
    for candidate in sorted(candidates, key=lambda c: (c.cost, c.predicted)):
        if not front or candidate.predicted < front[-1].predicted:
            front.append(candidate)
    return front
