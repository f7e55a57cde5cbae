"""Schedules built, not searched: one calibration pass, a fitted error model, a dynamic program per lane.

1. The calibration pass (`lanes.py`) runs the uncached model on the construction split (the calibration
   prompts at `CONSTRUCTION_SEEDS` seeds) and keeps each lane's Gram matrix over the steps.
2. The error model: a skipped step's fill error per lane comes from the Gram matrix (`program.py`); how those
   errors add up in the final image is fitted, not assumed. Lanes are grouped by component and depth
   (`weight_groups`); for each group one probe schedule skips that group's lanes on every other step, is
   scored on the construction split like any candidate (stored, so never paid twice), and the group's weight
   is the probe's mean squared image error over its predicted lane error.
3. Construction: for each fill, two layouts. Lanes in step (FORA's and TaylorSeer's layout with the steps
   chosen): the schedule's cost depends only on how many steps compute, so for every count the program
   finds the steps of least predicted error exactly, under two error models: the weighted sum of every
   lane's costs, and the transformer output's own fill error, which sees how lanes skipping together
   combine (its schedules win at most budgets on digits and tiny FLUX, the lane sum's on digits-28;
   docs/research/construct.md). Free: each lane its own steps, the budget shared by a multiplier swept over
   a log-spaced range. Each layout's and model's predicted front (exact MACs, forecast arithmetic included,
   against predicted error) is kept: a model ranks schedules within a layout well, and images decide
   between layouts and models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..schedule import CacheSchedule
from .program import CONSTRUCTED_FILLS, fill_errors, lane_error, plan_counts, plan_lanes, segment_costs

# Seeds per calibration prompt in the calibration pass and the probes.
CONSTRUCTION_SEEDS = 2
# Depth bands per component whose lanes share a fitted weight.
DEPTH_BANDS = 4
# Multipliers in the sweep.
MULTIPLIERS = 96
# How lanes may differ, in the order the first population takes their schedules: all on the same steps,
# chosen by the lanes' summed errors or by the transformer output's, or each lane on its own steps
# (docs/research/construct.md: the output model's schedules win on digits' calibration images at 20–50 %
# MACs, yet refinement from the lane sum's measured better; free adds the front's ends).
IN_STEP = ("in step", "in step by output")
LAYOUTS = (*IN_STEP, "free")


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

    `gram`: (lanes, steps, steps); `output_gram`: the transformer output's (steps, steps); `weights`: per
    lane; `probes`: per weight group, the probe's measured mean squared image error and its predicted
    (unweighted) lane error."""

    gram: np.ndarray
    output_gram: np.ndarray
    weights: np.ndarray
    probes: dict[str, tuple[float, float]]

    @classmethod
    def fit(
        cls, template: CacheSchedule, gram: np.ndarray, output_gram: np.ndarray, measured: dict[str, float]
    ) -> ErrorModel:
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
        return cls(gram, output_gram, weights, probes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gram": self.gram.tolist(),
            "output_gram": self.output_gram.tolist(),
            "weights": self.weights.tolist(),
            "probes": self.probes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorModel:
        probes = {name: (float(m), float(p)) for name, (m, p) in data["probes"].items()}
        arrays = (np.asarray(data[key], dtype=float) for key in ("gram", "output_gram", "weights"))
        return cls(*arrays, probes)


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
    """Each layout's predicted front over both fills, in `LAYOUTS` order, each cheapest first. An error model
    ranks schedules within a layout; the lane sum underrates what lanes out of step cost
    (docs/research/construct.md), so images decide between layouts."""
    built: dict[str, dict[str, Constructed]] = {layout: {} for layout in LAYOUTS}
    for fill in fills:
        order = CONSTRUCTED_FILLS[fill]
        lane_segments = segment_costs(fill_errors(model.gram, order)) * model.weights[:, None, None, None]
        output_segments = segment_costs(fill_errors(model.output_gram[None], order))[0]
        for layout, plans in (
            ("in step", _in_step(lane_segments.sum(axis=0), len(lane_macs))),
            ("in step by output", _in_step(output_segments, len(lane_macs))),
            ("free", _free(lane_segments, model, lane_macs)),
        ):
            for computes, predicted, choice in plans:
                provenance = {"method": "constructed", "layout": layout, "fill": fill, **choice}
                name = f"constructed-{fill}-{layout.replace(' ', '-')}"
                schedule = with_lanes(template, computes, fill, name=name, provenance=provenance)
                built[layout].setdefault(schedule.digest(), Constructed(schedule, relative_macs(schedule), predicted))
    unique: dict[str, Constructed] = {}
    for layout in LAYOUTS:
        for constructed in _predicted_front(list(built[layout].values())):
            unique.setdefault(constructed.schedule.digest(), constructed)
    return list(unique.values())


Plans = Iterator[tuple[np.ndarray, float, dict[str, Any]]]
"""Schedules of one layout and fill: per lane the steps it computes (lanes, steps), the predicted error, and
what chose them."""


def _in_step(segments: np.ndarray, lanes: int) -> Plans:
    """Every lane on the same steps, which the cost then depends on only through their count: for each count,
    the steps of least predicted error under one bundle's `segments[k, i, n]`."""
    for count, (computes, predicted) in plan_counts(segments).items():
        yield np.repeat(computes[None], lanes, axis=0), predicted, {"computed_steps": count}


def _free(segments: np.ndarray, model: ErrorModel, lane_macs: np.ndarray) -> Plans:
    """Each lane on its own steps, for each multiplier (error per MAC) of a sweep scaled to the model."""
    positive = model.weights[model.weights > 0]
    scale = (float(np.median(positive)) if positive.size else 1.0) * float(np.mean(np.diagonal(model.gram, 0, 1, 2)))
    for multiplier in np.logspace(-4, 3, MULTIPLIERS) * scale / float(np.mean(lane_macs)):
        plan = plan_lanes(segments, np.ones(len(lane_macs)), lane_macs, float(multiplier))
        yield plan.computes, float(plan.errors.sum()), {"multiplier": float(multiplier)}


def lane_computes(schedule: CacheSchedule) -> np.ndarray:
    """(lanes, steps): which steps each lane computes, lanes in `lane_keys` order."""
    return np.concatenate([mask.reshape(mask.shape[0], -1).T for _, _, mask in schedule.iter_groups()])


def _predicted_front(candidates: list[Constructed]) -> list[Constructed]:
    front: list[Constructed] = []
    for candidate in sorted(candidates, key=lambda c: (c.cost, c.predicted)):
        if not front or candidate.predicted < front[-1].predicted:
            front.append(candidate)
    return front
