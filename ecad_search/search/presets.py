"""NSGA-II presets: `ecad` reproduces the paper's settings; `default` is ours, chosen by measurement.

ECAD: population 72, 4-point crossover with probability 0.9, pymoo's bit-flip mutation with probability
0.05 (the chance that an offspring is mutated at all; each bit then flips with probability 1/n, so about 5 %
of offspring get about one flipped bit), duplicate elimination, and the constraint "differs from the no-cache
schedule". Our default keeps ECAD's operators on a smaller population, so a fixed image budget buys more
generations; lets the no-cache schedule anchor the front's quality end; fills a third of every generation
after the first with one-move neighbours of the archive's front (`operators.py`); and breeds four candidates
per place, letting the surrogate (`surrogate.py`) choose which are generated (`screen`). `fast` halves the
population again, so the surrogate is refitted twice as often, and races each candidate on a quarter of the
prompts first (`racing.py`; per-image metrics only). The measurements behind each choice are in
docs/search.md (`scripts/bench_search.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.operators.crossover.pntx import PointCrossover
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.mutation.bitflip import BitflipMutation


@dataclass(frozen=True)
class Preset:
    """Operators and settings of one NSGA-II configuration."""

    name: str
    population: int
    crossover: str
    crossover_prob: float
    crossover_points: int
    mutation_prob: float
    flips_per_offspring: float | None
    forbid_no_cache: bool
    refine_share: float = 0.0
    screen: int = 1
    race: float = 0.0

    def identity(self) -> dict[str, Any]:
        """What the preset contributes to a run's name: every field, except levers that are off, so that adding
        a lever renames no earlier run."""
        fields = asdict(self)
        if not self.race:
            del fields["race"]
        return fields

    def crossover_operator(self) -> Crossover:
        if self.crossover == "uniform":
            return UniformCrossover(prob=self.crossover_prob)
        return PointCrossover(n_points=self.crossover_points, prob=self.crossover_prob)

    def mutation_operator(self, genome_length: int) -> Mutation:
        """Per-bit rate: pymoo's 1/n when unset, else `flips_per_offspring / n` flips expected per offspring."""
        per_bit = None if self.flips_per_offspring is None else min(0.5, self.flips_per_offspring / genome_length)
        return BitflipMutation(prob=self.mutation_prob, prob_var=per_bit)

    def algorithm(self, initial: np.ndarray, population: int | None = None) -> NSGA2:
        size = population or self.population
        return NSGA2(
            pop_size=size,
            n_offsprings=size * self.screen,
            sampling=initial,
            crossover=self.crossover_operator(),
            mutation=self.mutation_operator(initial.shape[1]),
            eliminate_duplicates=True,
        )


PRESETS = {
    "ecad": Preset(
        name="ecad",
        population=72,
        crossover="points",
        crossover_prob=0.9,
        crossover_points=4,
        mutation_prob=0.05,
        flips_per_offspring=None,
        forbid_no_cache=True,
    ),
    "default": Preset(
        name="default",
        population=24,
        crossover="points",
        crossover_prob=0.9,
        crossover_points=4,
        mutation_prob=0.05,
        flips_per_offspring=None,
        forbid_no_cache=False,
        refine_share=1 / 3,
        screen=4,
    ),
}
PRESETS["fast"] = replace(PRESETS["default"], name="fast", population=12, race=0.25)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}': use one of {', '.join(PRESETS)}")
    return PRESETS[name]
