"""The first population: hand-made schedules spanning compute fractions from about 5 % to 100 %, topped up
with random masks of random density, all from one seeded generator."""

from __future__ import annotations

import numpy as np

from ..heuristics import all_heuristics
from ..schedule import CacheSchedule


def initial_population(template: CacheSchedule, size: int, seed: int, random_share: float = 0.25) -> np.ndarray:
    """`size` distinct genomes: heuristics evenly spread over compute fraction, then random ones."""
    rng = np.random.default_rng(seed)
    heuristics = sorted(all_heuristics(template.groups, template.num_steps), key=lambda s: s.compute_fraction)
    wanted = min(len(heuristics), size - round(size * random_share))
    picks = np.unique(np.linspace(0, len(heuristics) - 1, wanted).round().astype(int)) if wanted > 0 else []
    genomes = [heuristics[i].genome() for i in picks]
    seen = {g.tobytes() for g in genomes}
    while len(genomes) < size:
        density = rng.uniform(0.05, 1.0)
        genome = rng.random(template.genome_length) < density
        if genome.tobytes() not in seen:
            seen.add(genome.tobytes())
            genomes.append(genome)
    return np.stack(genomes)


def fora_reference(template: CacheSchedule) -> list[CacheSchedule]:
    """FORA every-N schedules, marked on the Pareto plot as the baseline to beat."""
    return [s for s in all_heuristics(template.groups, template.num_steps) if s.name.startswith("fora-")]
