"""Local refinement of the front: one-gene moves of its schedules, evaluated beside NSGA-II's offspring.

NSGA-II's crossover and bit-flip mutation explore the whole trade-off; they rarely try the small moves that
improve a good schedule at the same cost. The genome is step-major (`CacheSchedule.genome()`,
`genes_per_step` genes per denoising step), so moving one block component's computation one step earlier or
later keeps the MACs exactly and changes only when that output is refreshed; dropping one computation makes
the schedule slightly cheaper. On the digits model (fidelity), one random move of FORA-2 or FORA-3 gives a
schedule that dominates it about one time in five (23 of about 110 sampled), a candidate the paper's operators
almost never produce: one offspring in twenty is mutated, by about one flipped bit, after a crossover that
has usually moved it far away. pymoo has no such operator, so it is written here.
"""

from __future__ import annotations

import numpy as np


def shift_one(genome: np.ndarray, genes_per_step: int, rng: np.random.Generator) -> np.ndarray | None:
    """One computed gene moved one step earlier or later within its block component (same MACs), or None."""
    computed = np.flatnonzero(genome)
    if computed.size == 0:
        return None
    source = computed[rng.integers(computed.size)]
    target = source + genes_per_step * (1 if rng.random() < 0.5 else -1)
    if not 0 <= target < genome.size or genome[target]:
        return None
    moved = genome.copy()
    moved[source], moved[target] = False, True
    return moved


def drop_one(genome: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """One computed gene turned into a reuse (slightly fewer MACs), or None when nothing is computed."""
    computed = np.flatnonzero(genome)
    if computed.size == 0:
        return None
    dropped = genome.copy()
    dropped[computed[rng.integers(computed.size)]] = False
    return dropped


def front_neighbours(
    parents: list[np.ndarray],
    count: int,
    genes_per_step: int,
    rng: np.random.Generator,
    seen: set[bytes],
    tries: int = 16,
) -> list[tuple[int, np.ndarray]]:
    """Up to `count` unseen one-move neighbours, one per parent in the given order, as (parent index, genome).

    Each neighbour is a shift or a drop with equal chance. A parent whose tries all land on seen genomes (its
    neighbourhood is being exhausted) is passed over; with fewer parents than `count`, the order repeats.
    """
    neighbours: list[tuple[int, np.ndarray]] = []
    for turn in range(len(parents) * 2):
        if len(neighbours) == count:
            break
        index = turn % len(parents)
        for _ in range(tries):
            parent = parents[index]
            child = shift_one(parent, genes_per_step, rng) if rng.random() < 0.5 else drop_one(parent, rng)
            if child is not None and child.tobytes() not in seen:
                seen.add(child.tobytes())
                neighbours.append((index, child))
                break
    return neighbours
