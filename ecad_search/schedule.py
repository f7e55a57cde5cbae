"""The cache schedule: which component of which block is computed at which denoising step.

A schedule holds one boolean array per block group, shaped (steps, blocks, components); True means
"compute", False means "reuse this component's own output from the last step it was computed" (taken before
the adaLN gate; gate and residual are always recomputed). Groups follow the transformer's execution order
(FLUX: the 19 double-stream blocks, then the 38 single-stream blocks), and a group is named after the
attribute that holds its `nn.ModuleList`, so the runtime finds it without a per-model table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class ScheduleError(ValueError):
    """A schedule is malformed or does not fit the model it is applied to."""


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

    def __post_init__(self) -> None:
        masks = {g.name: np.array(self.masks.get(g.name), dtype=bool) for g in self.groups}
        _validate(self.groups, masks, self.masks)
        for mask in masks.values():
            mask.flags.writeable = False
        object.__setattr__(self, "masks", masks)

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

    def genome(self) -> np.ndarray:
        """Flat boolean genome without step 0 (always computed): per step, each group's blocks × components."""
        rows = [np.concatenate([m[s].ravel() for m in self.masks.values()]) for s in range(1, self.num_steps)]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=bool)

    def with_genome(self, genome: np.ndarray, **changes: Any) -> CacheSchedule:
        """A schedule of the same layout whose steps 1.. come from a genome made by `genome()`."""
        genome = np.asarray(genome, dtype=bool).ravel()
        if genome.size != self.genome_length:
            raise ScheduleError(f"genome has {genome.size} genes but this layout needs {self.genome_length}")
        per_step = genome.reshape(self.num_steps - 1, -1)
        masks, offset = {}, 0
        for _, group, mask in self.iter_groups():
            width = mask[0].size
            body = per_step[:, offset : offset + width].reshape(-1, *mask.shape[1:])
            masks[group.name] = np.concatenate([np.ones((1, *mask.shape[1:]), dtype=bool), body])
            offset += width
        return replace(self, masks=masks, **changes)

    def digest(self) -> str:
        """Content hash of layout and mask (not metadata): the identity of a schedule in a search."""
        h = hashlib.sha256()
        for _, group, mask in self.iter_groups():
            h.update(repr(group.to_dict()).encode())
            h.update(np.packbits(mask.ravel()).tobytes())
        h.update(str(self.num_steps).encode())
        return h.hexdigest()

    def same_mask(self, other: CacheSchedule) -> bool:
        return self.groups == other.groups and all(
            np.array_equal(self.masks[g.name], other.masks[g.name]) for g in self.groups
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


def peak_stored_outputs(schedule: CacheSchedule, weights: Mapping[str, np.ndarray] | None = None) -> float:
    """Peak number (or, with per-component `weights` shaped (blocks, components), bytes) of stored outputs.

    Walks the run in execution order: within a step, blocks already executed hold what the next step
    reuses, blocks not yet executed still hold what this step reuses.
    """
    flat_reuse = []
    for _, group, mask in schedule.iter_groups():
        w = np.ones(mask.shape[1:]) if weights is None else np.asarray(weights[group.name], dtype=float)
        flat_reuse.append((~mask).astype(float) * w)
    reuse = np.concatenate([r.reshape(r.shape[0], -1) for r in flat_reuse], axis=1)
    nxt = np.zeros_like(reuse)
    nxt[:-1] = reuse[1:]
    before = np.cumsum(nxt, axis=1)
    after = reuse.sum(axis=1, keepdims=True) - np.cumsum(reuse, axis=1)
    held_within = before + after
    held_between = nxt.sum(axis=1)
    return float(max(held_within.max(initial=0.0), held_between.max(initial=0.0)))


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
