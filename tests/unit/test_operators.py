"""Front refinement moves: a shift keeps each component's number of computed steps, a drop removes one."""

from __future__ import annotations

import numpy as np

from ecad_search.heuristics import fora
from ecad_search.models import block_groups, get_model
from ecad_search.search.operators import drop_one, front_neighbours, shift_one

STEPS = 20


def fora_genome(n: int) -> tuple[np.ndarray, int]:
    genome = fora(block_groups(get_model("pixart-alpha")), STEPS, n).genome()
    return genome, genome.size // (STEPS - 1)


def per_component(genome: np.ndarray, width: int) -> np.ndarray:
    return genome.reshape(STEPS - 1, width).sum(axis=0)


def test_a_shift_moves_one_computation_one_step_within_its_component() -> None:
    genome, width = fora_genome(3)
    rng = np.random.default_rng(0)
    shifted = [s for s in (shift_one(genome, width, rng) for _ in range(200)) if s is not None]
    assert len(shifted) > 100
    for moved in shifted:
        assert np.array_equal(per_component(moved, width), per_component(genome, width))
        changed = np.flatnonzero(moved != genome)
        assert len(changed) == 2 and changed[1] - changed[0] == width
    assert shift_one(np.ones_like(genome), width, rng) is None


def test_a_drop_removes_exactly_one_computation() -> None:
    genome, _ = fora_genome(2)
    dropped = drop_one(genome, np.random.default_rng(1))
    assert dropped.sum() == genome.sum() - 1 and not (dropped & ~genome).any()
    assert drop_one(np.zeros_like(genome), np.random.default_rng(1)) is None


def test_front_neighbours_take_parents_in_order_skip_seen_genomes_and_follow_the_seed() -> None:
    parents = [fora_genome(n)[0] for n in (2, 3, 4, 5)]
    width = fora_genome(2)[1]
    seen = {g.tobytes() for g in parents}
    first = front_neighbours(parents, 6, width, np.random.default_rng(7), set(seen))
    assert [index for index, _ in first] == [0, 1, 2, 3, 0, 1]
    children = [genome for _, genome in first]
    assert len({g.tobytes() for g in children}) == 6 and not {g.tobytes() for g in children} & seen
    for index, child in first:
        assert np.argmin([np.sum(child != p) for p in parents]) == index
        assert 1 <= np.sum(child != parents[index]) <= 2
    again = front_neighbours(parents, 6, width, np.random.default_rng(7), set(seen))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
