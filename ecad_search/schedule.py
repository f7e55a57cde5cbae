"""The cache schedule: which component of which block is computed at which denoising step.

A schedule holds one boolean array per block group, shaped (steps, blocks, components); True means
"compute", False means "fill this component's output from the steps it computed" (taken before the adaLN gate;
gate and residual are always recomputed). Its `fill` says how: `reuse` the last output, or forecast it with a
Taylor series of order 1 or 2 from the last computed outputs (`taylor1`, `taylor2`; `runtime.forecast`).
Groups follow the transformer's execution order (FLUX: the 19 double-stream blocks, then the 38
single-stream blocks), and a group is named after the attribute that holds its `nn.ModuleList`, so the
runtime finds it without a per-model table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class ScheduleError(ValueError):
    """A schedule is malformed or does not fit the model it is applied to."""


# How a skipped component is filled, and the order of the Taylor forecast that fills it (0: the last output).
FILLS = {"reuse": 0, "taylor1": 1, "taylor2": 2}
# A genome may end in this many fill genes: the fill's order is how many of them are set.
FILL_GENES = 2


@dataclass(frozen=True)
class BlockGroup:
    """A stack of identical transformer blocks and the cacheable components of each block."""

    name: str
    num_blocks: int
    components: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_blocks": self.num_blocks, "components": list(self.components)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockGroup:
        return cls(str(data["name"]), int(data["num_blocks"]), tuple(str(c) for c in data["components"]))


@dataclass(frozen=True)
class ModelRef:
    """Which model a schedule was made for: registry name (or local path), family and hub id if any."""

    name: str
    family: str
    hub_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "hub_id": self.hub_id}


@dataclass(frozen=True)
class CacheSchedule:
    """A validated cache mask plus the generation settings it was made for.

    `metrics` maps a figure name (e.g. "macs", "quality_loss") to `{"value", "unit", "definition"}`;
    `provenance` records how the schedule was made. Both travel with the schedule into its JSON file.
    """

    groups: tuple[BlockGroup, ...]
    masks: Mapping[str, np.ndarray]
    model: ModelRef | None = None
    name: str = ""
    height: int | None = None
    width: int | None = None
    guidance_scale: float | None = None
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    fill: str = "reuse"

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ScheduleError(f"unknown `fill` '{self.fill}': use one of {', '.join(FILLS)}")
        masks = {g.name: np.array(self.masks.get(g.name), dtype=bool) for g in self.groups}
        _validate(self.groups, masks, self.masks)
        for mask in masks.values():
            mask.flags.writeable = False
        object.__setattr__(self, "masks", masks)

    @property
    def forecast_order(self) -> int:
        """The Taylor order that fills skipped components (0: reuse)."""
        return FILLS[self.fill]

    @property
    def num_steps(self) -> int:
        return next(iter(self.masks.values())).shape[0]

    def mask(self, group: str) -> np.ndarray:
        """The (steps, blocks, components) compute mask of one group (read-only)."""
        return self.masks[group]

    def iter_groups(self) -> Iterator[tuple[int, BlockGroup, np.ndarray]]:
        for index, group in enumerate(self.groups):
            yield index, group, self.masks[group.name]

    @property
    def compute_fraction(self) -> float:
        """Share of component evaluations that run (unweighted; see `estimate_macs` for cost)."""
        computed = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.size for m in self.masks.values())
        return computed / total

    def step_compute_fraction(self) -> np.ndarray:
        """Per step, the share of component evaluations that run."""
        computed = sum(m.reshape(m.shape[0], -1).sum(axis=1) for m in self.masks.values())
        total = sum(m[0].size for m in self.masks.values())
        return np.asarray(computed, dtype=float) / total

    @property
    def genome_length(self) -> int:
        return sum(m[1:].size for m in self.masks.values())

    @property
    def genes_per_step(self) -> int:
        """Genes of one step in the step-major genome: every group's blocks × components."""
        return sum(m[0].size for m in self.masks.values())

    def genome(self, fill_genes: bool | None = None) -> np.ndarray:
        """Flat boolean genome without step 0 (always computed): per step, each group's blocks × components;
        then `FILL_GENES` fill genes, when asked for or (by default) when the fill is a forecast, so a reuse
        schedule's genome is what it was before fills existed."""
        rows = [np.concatenate([m[s].ravel() for m in self.masks.values()]) for s in range(1, self.num_steps)]
        mask = np.concatenate(rows) if rows else np.zeros(0, dtype=bool)
        if not (self.fill != "reuse" if fill_genes is None else fill_genes):
            return mask
        order = self.forecast_order
        return np.concatenate([mask, np.arange(FILL_GENES) >= FILL_GENES - order])

    def with_genome(self, genome: np.ndarray, **changes: Any) -> CacheSchedule:
        """A schedule of the same layout whose steps 1.. (and fill, if the genome ends in fill genes) come from
        a genome made by `genome()`."""
        genome = np.asarray(genome, dtype=bool).ravel()
        if genome.size not in (self.genome_length, self.genome_length + FILL_GENES):
            raise ScheduleError(
                f"genome has {genome.size} genes but this layout needs {self.genome_length} "
                f"(or {self.genome_length + FILL_GENES} with the fill's)"
            )
        if genome.size > self.genome_length:
            order = int(genome[self.genome_length :].sum())
            changes.setdefault("fill", next(name for name, o in FILLS.items() if o == order))
            genome = genome[: self.genome_length]
        per_step = genome.reshape(self.num_steps - 1, -1)
        masks, offset = {}, 0
        for _, group, mask in self.iter_groups():
            width = mask[0].size
            body = per_step[:, offset : offset + width].reshape(-1, *mask.shape[1:])
            masks[group.name] = np.concatenate([np.ones((1, *mask.shape[1:]), dtype=bool), body])
            offset += width
        return replace(self, masks=masks, **changes)

    def digest(self) -> str:
        """Content hash of layout, mask and fill (not metadata): the identity of a schedule in a search. A
        reuse schedule hashes as it did before fills existed, so stored evaluations keep their keys."""
        h = hashlib.sha256()
        for _, group, mask in self.iter_groups():
            h.update(repr(group.to_dict()).encode())
            h.update(np.packbits(mask.ravel()).tobytes())
        h.update(str(self.num_steps).encode())
        if self.fill != "reuse":
            h.update(self.fill.encode())
        return h.hexdigest()

    def same_mask(self, other: CacheSchedule) -> bool:
        return (
            self.groups == other.groups
            and self.fill == other.fill
            and all(np.array_equal(self.masks[g.name], other.masks[g.name]) for g in self.groups)
        )

    def with_metadata(self, **changes: Any) -> CacheSchedule:
        return replace(self, **changes)

    @classmethod
    def all_compute(cls, groups: tuple[BlockGroup, ...], num_steps: int, **meta: Any) -> CacheSchedule:
        """The no-cache schedule: every component at every step."""
        masks = {g.name: np.ones((num_steps, g.num_blocks, len(g.components)), dtype=bool) for g in groups}
        return cls(groups=tuple(groups), masks=masks, **meta)


def reuse_plan(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which outputs to store after computing them, and which stored outputs to drop after reusing them.

    A component's output is kept only while a later step still reuses it: it is stored at a computing step
    followed by a reusing step, and released at the last reusing step before the next compute (or the end).
    """
    following = np.ones_like(mask)
    following[:-1] = mask[1:]
    store = mask & ~following
    release = ~mask & following
    release[-1] = ~mask[-1]
    return store, release


def later_skips(mask: np.ndarray) -> np.ndarray:
    """Per step and lane, whether the lane skips a later step: only then is anything kept for it."""
    skipped = ~np.asarray(mask, dtype=bool)
    after = np.zeros_like(skipped)
    after[:-1] = np.flip(np.logical_or.accumulate(np.flip(skipped[1:], axis=0), axis=0), axis=0)
    return after


def lane_terms(mask: np.ndarray, order: int) -> np.ndarray:
    """How many terms a forecast of `order` holds after each step, per lane of a (steps, …) mask: one after the
    first compute, one more at each later compute up to `order + 1`."""
    computes = np.cumsum(mask, axis=0)
    return np.where(computes > 0, np.minimum(computes, order + 1), 0)


def forecast_macs(mask: np.ndarray, order: int, elements: np.ndarray) -> np.ndarray:
    """Per step, the MACs a forecast of `order` spends on a (steps, blocks, components) mask whose components
    have `elements` output elements per row: differences at each compute a later skip needs, one multiply-add
    per element and term at each skipped step. Counted from the mask alone, as the runtime spends them."""
    terms = lane_terms(mask, order)
    differences = np.where(mask & later_skips(mask), terms - 1, 0)
    additions = np.where(mask, 0, terms - 1)
    return ((differences + additions) * elements).reshape(mask.shape[0], -1).sum(axis=1)


def peak_stored_outputs(schedule: CacheSchedule, weights: Mapping[str, np.ndarray] | None = None) -> float:
    """Peak number (or, with per-component `weights` shaped (blocks, components), bytes) of stored outputs;
    a forecast fill stores up to `order + 1` terms per component, each the size of an output.

    Walks the run in execution order: within a step, blocks already executed hold what the next step
    reuses, blocks not yet executed still hold what this step reuses.
    """
    lane_weights = [
        np.ones(mask.shape[1:]) if weights is None else np.asarray(weights[group.name], dtype=float)
        for _, group, mask in schedule.iter_groups()
    ]
    if schedule.forecast_order:
        return _peak_forecast_terms(schedule, lane_weights, counted=weights is not None)
    flat_reuse = [
        (~mask).astype(float) * w for (_, _, mask), w in zip(schedule.iter_groups(), lane_weights, strict=True)
    ]
    reuse = np.concatenate([r.reshape(r.shape[0], -1) for r in flat_reuse], axis=1)
    nxt = np.zeros_like(reuse)
    nxt[:-1] = reuse[1:]
    before = np.cumsum(nxt, axis=1)
    after = reuse.sum(axis=1, keepdims=True) - np.cumsum(reuse, axis=1)
    held_within = before + after
    held_between = nxt.sum(axis=1)
    return float(max(held_within.max(initial=0.0), held_between.max(initial=0.0)))


def _peak_forecast_terms(schedule: CacheSchedule, lane_weights: list[np.ndarray], counted: bool) -> float:
    """`peak_stored_outputs` of a forecast fill: a lane holds its terms after a step while a later step skips
    it; each lane's holding changes where execution reaches it within the step. Counted as tensors (one per
    lane, as the runtime counts a lane's terms) or, weighted, as bytes (one output's bytes per term)."""
    after_steps = []
    for (_, _, mask), w in zip(schedule.iter_groups(), lane_weights, strict=True):
        terms = lane_terms(mask, schedule.forecast_order) * later_skips(mask)
        held = terms * w if counted else (terms > 0) * w
        after_steps.append(held.reshape(mask.shape[0], -1))
    after = np.concatenate(after_steps, axis=1).astype(float)
    before = np.zeros_like(after)
    before[1:] = after[:-1]
    within = np.cumsum(after, axis=1) + (before.sum(axis=1, keepdims=True) - np.cumsum(before, axis=1))
    return float(max(within.max(initial=0.0), before.sum(axis=1).max(initial=0.0)))


def _validate(groups: tuple[BlockGroup, ...], masks: dict[str, np.ndarray], given: Mapping[str, Any]) -> None:
    if not groups:
        raise ScheduleError("schedule has no block groups")
    unknown = set(given) - {g.name for g in groups}
    if unknown:
        raise ScheduleError(f"mask given for unknown block group(s) {sorted(unknown)}")
    steps = None
    for group in groups:
        mask = masks[group.name]
        expected = (group.num_blocks, len(group.components))
        if mask.ndim != 3 or mask.shape[1:] != expected:
            raise ScheduleError(
                f"mask of group '{group.name}' has shape {mask.shape}, expected (steps, {expected[0]}, {expected[1]})"
            )
        if steps is None:
            steps = mask.shape[0]
        if mask.shape[0] != steps or steps < 1:
            raise ScheduleError(f"mask of group '{group.name}' has {mask.shape[0]} steps, other groups have {steps}")
        if not mask[0].all():
            raise ScheduleError(
                f"group '{group.name}' reuses a component at step 0, where nothing is cached yet: step 0 must compute"
            )
