"""Shared prefixes: candidates whose masks agree on their first k steps compute those k steps once.

A batch of schedules is run in the lexicographic order of their step-major masks, so that candidates that
share a prefix sit next to each other, as the leaves of a tree. Each run leaves on a `PrefixTape`:

- the transformer's output at every step (the size of the latents: cheap), overwritten from the step where
  the next candidate's path leaves the tree;
- at each step where a later candidate forks from this run, the component outputs that candidate reuses
  there (what its own run would hold at that step): its snapshot.

A candidate that shares k steps with the one before it takes those k transformer outputs from the tape (the
pipeline's own loop, scheduler included, still runs every step, so its multistep history is exact), takes
the snapshot at step k as its kept outputs and computes from step k on. Its images are bit-identical to an
independent run wherever the transformer is deterministic, since every tensor it uses is one an identical
computation made. Snapshots that would take the tape past its memory budget are not kept; a candidate that
finds none computes from noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..schedule import CacheSchedule

# A component: (group index, block, component), as the runtime names it.
Key = tuple[int, int, int]
# One pipeline call of a candidate's evaluation, and the diffusers cache context within it.
RunKey = tuple[int, int]


@dataclass(frozen=True)
class PrefixLink:
    """One candidate's place in its batch's prefix tree.

    `replay`: leading steps taken from the tape. `record`: leading steps whose transformer outputs later
    candidates take (this run writes those from `replay` on). `forks`: steps where a later candidate forks
    from this run, with the components that candidate reuses there. `drops`: fork steps whose snapshots no
    later candidate needs once this one has run.
    """

    replay: int = 0
    record: int = 0
    forks: Mapping[int, frozenset[Key]] = field(default_factory=dict)
    drops: tuple[int, ...] = ()

    @cached_property
    def tracked(self) -> frozenset[Key]:
        """Components whose latest output this run must hold for a snapshot."""
        return frozenset().union(*self.forks.values())


def step_rows(schedule: CacheSchedule) -> np.ndarray:
    """The mask as (steps, components) in execution order within a step: the order of the prefix tree."""
    return np.concatenate([mask.reshape(mask.shape[0], -1) for _, _, mask in schedule.iter_groups()], axis=1)


def component_keys(schedule: CacheSchedule) -> list[Key]:
    """The runtime's key of each column of `step_rows`."""
    return [
        (g, b, c) for g, _, mask in schedule.iter_groups() for b in range(mask.shape[1]) for c in range(mask.shape[2])
    ]


def shared_steps(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading steps two `step_rows` agree on."""
    differing = np.flatnonzero((a != b).any(axis=1))
    return int(differing[0]) if differing.size else a.shape[0]


def prefix_plan(schedules: Sequence[CacheSchedule]) -> list[tuple[int, PrefixLink]]:
    """The order to run `schedules` in (their indices) and each one's link.

    Candidate j forks at k_j, the steps it shares with the one before it. Its snapshot comes from the last
    earlier candidate that forked before k_j (every candidate in between shares at least k_j steps with it,
    so that one is the last to have computed step k_j - 1 on this path).
    """
    if not schedules:
        return []
    rows = [step_rows(schedule) for schedule in schedules]
    order = tree_order(rows)
    keys = component_keys(schedules[0])
    steps = rows[0].shape[0]
    fork = [0] + [shared_steps(rows[order[j - 1]], rows[order[j]]) for j in range(1, len(order))]
    forks: list[dict[int, set[Key]]] = [{} for _ in order]
    last_user: dict[tuple[int, int], int] = {}
    for j in range(1, len(order)):
        k = fork[j]
        if k == steps:  # the same mask again: every step comes from the tape, nothing is reused from a snapshot
            continue
        source = max(i for i in range(j) if fork[i] < k)
        reused = {keys[c] for c in np.flatnonzero(~rows[order[j]][k])}
        forks[source].setdefault(k, set()).update(reused)
        last_user[(source, k)] = j
    drops: list[list[int]] = [[] for _ in order]
    for (_, k), j in last_user.items():
        drops[j].append(k)
    record = [max(fork[j + 1 :], default=0) for j in range(len(order))]
    return [
        (
            order[j],
            PrefixLink(
                replay=fork[j],
                record=record[j],
                forks={k: frozenset(v) for k, v in sorted(forks[j].items())},
                drops=tuple(sorted(drops[j])),
            ),
        )
        for j in range(len(order))
    ]


def tree_order(rows: Sequence[np.ndarray]) -> list[int]:
    """Indices of `step_rows` in lexicographic order: masks that share a prefix become neighbours."""
    return sorted(range(len(rows)), key=lambda i: rows[i].tobytes())


def prefix_groups(schedules: Sequence[CacheSchedule], parts: int) -> list[list[int]]:
    """`schedules` (their indices) cut into at most `parts` groups of neighbours in tree order, sizes within one
    of each other: each group, run together, shares the steps its members agree on (how Ray workers share)."""
    if not schedules:
        return []
    order = tree_order([step_rows(schedule) for schedule in schedules])
    return [[int(i) for i in group] for group in np.array_split(order, min(parts, len(order)))]


class PrefixTape:
    """What the runs of one batch leave for later candidates, per pipeline call and cache context: the
    transformer output of each step on the current path, and snapshots at fork steps, within `budget_bytes`."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.outputs: dict[RunKey, dict[int, Any]] = {}
        self.snapshots: dict[RunKey, dict[int, dict[Key, Any]]] = {}
        self.bytes = 0
        self.replayed_steps = 0

    def can_replay(self, run: RunKey, steps: int, num_steps: int) -> bool:
        """Whether a run can take its first `steps` steps from the tape (and, unless that is every step, the
        snapshot at the step where it forks)."""
        outputs = self.outputs.get(run, {})
        if any(step not in outputs for step in range(steps)):
            return False
        return steps == num_steps or steps in self.snapshots.get(run, {})

    def output(self, run: RunKey, step: int) -> Any:
        self.replayed_steps += 1
        return self.outputs[run][step]

    def snapshot(self, run: RunKey, step: int) -> dict[Key, Any]:
        return self.snapshots[run][step]

    def record_output(self, run: RunKey, step: int, output: Any) -> None:
        outputs = self.outputs.setdefault(run, {})
        self.bytes -= nbytes(outputs.get(step))
        size = nbytes(output)
        if self.bytes + size > self.budget_bytes:
            outputs.pop(step, None)
            return
        outputs[step] = output
        self.bytes += size

    def keep_snapshot(self, run: RunKey, step: int, kept: dict[Key, Any]) -> None:
        self.drop_snapshot(run, step)
        size = nbytes(tuple(kept.values()))
        if self.bytes + size <= self.budget_bytes:
            self.snapshots.setdefault(run, {})[step] = kept
            self.bytes += size

    def drop_snapshot(self, run: RunKey, step: int) -> None:
        old = self.snapshots.get(run, {}).pop(step, None)
        if old is not None:
            self.bytes -= nbytes(tuple(old.values()))

    def drop(self, steps: Sequence[int]) -> None:
        """Forget the snapshots at these fork steps, in every run."""
        for run in list(self.snapshots):
            for step in steps:
                self.drop_snapshot(run, step)


def nbytes(output: Any) -> int:
    """Bytes of a tensor, of a tuple or list of them, or of a diffusers output holding them."""
    if output is None:
        return 0
    if isinstance(output, (tuple, list)):
        return sum(nbytes(part) for part in output)
    if hasattr(output, "numel") and hasattr(output, "element_size"):
        return output.numel() * output.element_size()
    if hasattr(output, "to_tuple"):
        return nbytes(output.to_tuple())
    return 0
