"""The NSGA-II loop: pymoo asks, we evaluate (or find the evaluation in the database), pymoo is told.

Resuming needs no checkpoint: the algorithm is seeded, so replaying it from generation 0 with every
evaluation served from the database reproduces exactly the same populations and archive, and only masks
never evaluated before cost any time. Every new evaluation is written as soon as it exists, so a crash loses
at most the candidate being generated.

With a confirmation split (the selection-bias guard, `splits.py`), every schedule on the archive's front has
been scored again on fresh seeds and its loss is the pooled one; NSGA-II itself sees calibration losses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem

from ..evaluation import EvaluationSettings, Evaluator
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, Store
from .archive import Archive
from .operators import front_neighbours
from .presets import Preset
from .seeding import initial_population
from .splits import SplitScorer, pooled_loss
from .stats import paired_difference


@dataclass(frozen=True)
class GenerationReport:
    """What one generation did when it first ran, for progress displays and outputs.

    Every candidate of the population is counted once: `evaluated` (generated and scored now),
    `from_database` (scored before this run looked: by another run, or by this one before a crash) or
    `duplicates` (a mask this run had already scored: a repeat within the population, a FORA baseline in
    the first population). A replayed generation (resume) reports the counts and time it had when it ran.
    """

    index: int
    evaluated: int
    from_database: int
    duplicates: int
    hypervolume: float
    front_size: int
    replayed: bool
    wall_time_s: float
    confirmed: int = 0


@dataclass
class SearchState:
    """Where a search is: the archive, what each evaluated digest scored on the calibration images, and the
    pooled loss of each confirmed one."""

    archive: Archive = field(default_factory=Archive)
    records: dict[str, EvaluationRecord] = field(default_factory=dict)
    pooled: dict[str, float] = field(default_factory=dict)

    def search_loss(self, digest: str) -> float:
        """The loss the search decides by: pooled once confirmed, else the calibration loss."""
        return self.pooled.get(digest, self.records[digest].quality_loss)


ProgressCallback = Callable[[str, int, int], None]


class Search:
    """One run of the search on one evaluator and one store."""

    def __init__(
        self,
        *,
        run: str,
        evaluator: Evaluator,
        store: Store,
        preset: Preset,
        population: int,
        seed: int,
        confirmation: EvaluationSettings | None = None,
    ) -> None:
        self.run, self.evaluator, self.store = run, evaluator, store
        self.preset, self.population, self.seed = preset, population, seed
        self.template: CacheSchedule = evaluator.template
        self.calibration = SplitScorer(evaluator.settings, store, lambda: evaluator)
        self.confirmation = (
            SplitScorer(confirmation, store, lambda: evaluator.sibling(confirmation)) if confirmation else None
        )
        self.eval_key = self.calibration.key
        self.state = SearchState(archive=Archive(evaluator.metric.reference_loss), records=self.calibration.records)
        self.done_before = {g.index: g for g in store.generations(run)}
        length = self.template.genome_length
        self.problem = Problem(
            n_var=length, n_obj=2, n_ieq_constr=1 if preset.forbid_no_cache else 0, xl=0, xu=1, vtype=bool
        )
        initial = initial_population(self.template, population, seed)
        self.algorithm = preset.algorithm(initial, population)
        self.algorithm.setup(self.problem, termination=NoTermination(), seed=seed, verbose=False)

    def schedule(self, genome: np.ndarray) -> CacheSchedule:
        return self.template.with_genome(genome)

    def step(self, index: int, on_candidate: ProgressCallback | None = None) -> GenerationReport:
        """Ask for a population, evaluate what is new, tell the algorithm, record the generation."""
        start = time.perf_counter()
        population = self.algorithm.ask()
        genomes = population.get("X").astype(bool)
        if index > 0 and self.preset.refine_share:
            genomes = self._with_refinements(genomes, index)
            population.set("X", genomes)
        schedules = [self.schedule(g) for g in genomes]
        digests = [s.digest() for s in schedules]
        scored_before = set(self.state.records)
        known = self.store.lookup(self.eval_key, sorted(set(digests) - scored_before))
        self.state.records.update(known)
        evaluated = from_database = 0
        counted: set[str] = set()
        for position, (digest, schedule) in enumerate(zip(digests, schedules, strict=True)):
            if on_candidate:
                on_candidate(digest, position, len(digests))
            if digest in counted or digest in scored_before:
                pass
            elif digest in known:
                from_database += 1
            else:
                self.calibration.evaluate_and_record(digest, schedule)
                evaluated += 1
            counted.add(digest)
        F = np.array([[self.state.records[d].quality_loss, self.state.records[d].cost] for d in digests])
        G = (1.0 - (~genomes).sum(axis=1, keepdims=True)).astype(float) if self.preset.forbid_no_cache else None
        self.algorithm.evaluator.eval(StaticProblem(self.problem, F=F, G=G), population)
        self.algorithm.tell(infills=population)
        for digest, genome, objectives in zip(digests, genomes, F, strict=True):
            self.state.archive.add(digest, genome, (self.state.search_loss(digest), float(objectives[1])))
        confirmed = self.confirm_front()
        front = self.state.archive.front()
        hypervolume = self.state.archive.hypervolume()
        seconds = time.perf_counter() - start
        self.store.record_generation(
            self.run,
            index,
            digests,
            [p.digest for p in front],
            hypervolume,
            evaluated,
            from_database,
            seconds,
            confirmed,
        )
        earlier = self.done_before.get(index)
        if earlier is not None:
            evaluated, from_database, seconds = earlier.evaluated, earlier.memo_hits, earlier.wall_time_s
            confirmed = earlier.confirmed
        duplicates = len(digests) - evaluated - from_database
        return GenerationReport(
            index,
            evaluated,
            from_database,
            duplicates,
            hypervolume,
            len(front),
            earlier is not None,
            seconds,
            confirmed,
        )

    def search_scores(self, digest: str, pooled: bool) -> list[float]:
        """The per-prompt scores the search knows for a mask: calibration, averaged with confirmation (the
        same prompts on fresh seeds) when `pooled`, so that each prompt stays one unit of the comparison."""
        scores = np.asarray(self.state.records[digest].scores["prompt_scores"], dtype=float)
        if pooled and self.confirmation is not None:
            scores = (scores + np.asarray(self.confirmation.records[digest].scores["prompt_scores"])) / 2
        return scores.tolist()

    def significantly_better(self, digest: str, than: str) -> bool:
        """Whether one mask beats another on the search's own images with a paired 95 % interval that
        excludes zero: on calibration and confirmation images when both were confirmed, else calibration."""
        pooled = self.confirmation is not None and all(d in self.confirmation.records for d in (digest, than))
        difference = paired_difference(self.search_scores(digest, pooled), self.search_scores(than, pooled))
        return difference.verdict > 0

    def confirm_front(self) -> int:
        """Score every unconfirmed front member on the confirmation seeds and pool its loss, until the whole
        front is confirmed (a member whose pooled loss rises can let another in). Returns how many were
        scored now; without a confirmation split, nothing happens."""
        if self.confirmation is None:
            return 0
        before = self.confirmation.evaluated
        while pending := {
            p.digest: self.schedule(p.genome) for p in self.state.archive.front() if p.digest not in self.state.pooled
        }:
            for digest, record in self.confirmation.scores(pending).items():
                loss = pooled_loss(self.state.records[digest], record)
                self.state.pooled[digest] = loss
                self.state.archive.rescore(digest, (loss, self.state.archive.points[digest].objectives[1]))
        return self.confirmation.evaluated - before

    def _with_refinements(self, offspring: np.ndarray, index: int) -> np.ndarray:
        """The last `refine_share` of the offspring replaced by unseen one-move neighbours of the front.

        The front is visited in turn (cheapest first, continuing each generation where the last one stopped).
        The moves come from a generator seeded by the run's seed and the generation index, and the front is
        the archive's, which a replay rebuilds exactly, so a resumed run asks for the same candidates.
        """
        count = round(self.preset.refine_share * len(offspring))
        front = [p.genome for p in self.state.archive.front()]
        start = (index * count) % len(front)
        seen = {g.tobytes() for g in offspring} | {p.genome.tobytes() for p in self.state.archive.points.values()}
        rng = np.random.default_rng([self.seed, index])
        local = front_neighbours(front[start:] + front[:start], count, self.template.genes_per_step, rng, seen)
        if local:
            offspring = offspring.copy()
            offspring[len(offspring) - len(local) :] = np.stack([genome for _, genome in local])
        return offspring
