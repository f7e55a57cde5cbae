"""The first population: the FORA baselines, the constructed front when there is one (`construct`), hand-made
schedules spanning compute fractions from about 5 % to 100 %, and random masks of random density (and, where
the fill is searched, random fills), all from one seeded generator.

FORA always seeds the search: it is the baseline every front is compared with (and is evaluated for that
comparison anyway, so seeding it costs nothing), and on the digits model it is a strong schedule that a
front started without it needs many generations to reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import FieldError
from ..heuristics import all_heuristics, fora
from ..schedule import FILL_GENES, CacheSchedule

FORA_BASELINES = (2, 3, 4, 5, 6)


def initial_population(
    template: CacheSchedule,
    size: int,
    seed: int,
    random_share: float = 0.25,
    seeds: Sequence[CacheSchedule] = (),
    fill_genes: bool = False,
) -> np.ndarray:
    """`size` distinct genomes: the FORA baselines, the `seeds` (as many as fit, in the order given), other
    heuristics spread over compute fraction, random ones. With `fill_genes`, every genome ends in the fill's
    genes (`CacheSchedule.genome`).

    A genome space smaller than `size` is refused (the search checks it before it starts), so the random
    fill always terminates.
    """
    check_population_size(template, size)
    rng = np.random.default_rng(seed)
    genes = template.genome_length + (FILL_GENES if fill_genes else 0)
    baselines = [s.genome(fill_genes) for s in fora_reference(template)][:size]
    seen = {g.tobytes() for g in baselines}
    for genome in (s.genome(fill_genes) for s in seeds):
        if len(baselines) < size and genome.tobytes() not in seen:
            seen.add(genome.tobytes())
            baselines.append(genome)
    heuristics = sorted(
        (s for s in all_heuristics(template.groups, template.num_steps) if s.genome(fill_genes).tobytes() not in seen),
        key=lambda s: s.compute_fraction,
    )
    wanted = min(len(heuristics), size - len(baselines) - round(size * random_share))
    picks = np.unique(np.linspace(len(heuristics) - 1, 0, wanted).round().astype(int)) if wanted > 0 else []
    genomes = baselines + [heuristics[i].genome(fill_genes) for i in picks]
    seen |= {g.tobytes() for g in genomes}
    while len(genomes) < size:
        density = rng.uniform(0.05, 1.0)
        genome = rng.random(genes) < density
        if genome.tobytes() not in seen:
            seen.add(genome.tobytes())
            genomes.append(genome)
    return np.stack(genomes)


def check_population_size(template: CacheSchedule, size: int) -> None:
    """A population is `size` distinct masks: refuse a genome space that has fewer."""
    if 2**template.genome_length < size:
        raise FieldError(
            f"`population` {size} exceeds the {2**template.genome_length} distinct masks of {template.num_steps} "
            "steps of this model; lower `population` or raise `steps`"
        )


def fora_reference(template: CacheSchedule) -> list[CacheSchedule]:
    """FORA every-N for N = 2..6: the baselines a front is compared with, and part of the first population."""
    return [fora(template.groups, template.num_steps, n) for n in FORA_BASELINES if n < template.num_steps]
