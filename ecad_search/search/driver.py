"""The NSGA-II loop: pymoo asks, the pool scores what is new (or the database has it), pymoo is told.

Resuming needs no checkpoint: the algorithm is seeded, so replaying it from generation 0 with every
evaluation served from the database reproduces exactly the same populations and archive, and only masks
never evaluated before cost any time. Every new evaluation is written as soon as it arrives, so a crash loses
at most the candidates in flight. Results are used in population order, never in arrival order, so the
archive is the same whatever the number of workers. A candidate that could not be scored (it killed its
workers) is infeasible for NSGA-II (one inequality constraint) and never enters the archive.

With a confirmation split (the selection-bias guard, `splits.py`), every schedule on the archive's front has
been scored again on fresh seeds and its loss is the pooled one; NSGA-II itself sees calibration losses.
With racing (`racing.py`), a new candidate is scored on the race prompts first and finished only when it could
still enter the front; one dropped there never enters the archive, and NSGA-II sees its race loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem

from ..evaluation import EvaluationSettings
from ..families import ADHERENCE, mean
from ..pool import EvaluationPool, genome_bits
from ..schedule import FILL_GENES, CacheSchedule
from ..store import EvaluationRecord, Store
from ..verdict import paired_difference
from .archive import Archive
from .operators import front_neighbours
from .presets import Preset
from .racing import RaceSplit, Rival, beaten, finish
from .seeding import initial_population
from .splits import SplitScorer, pooled_loss
from .surrogate import MIN_EVALUATIONS, LossModel, MaskFeatures, fit_loss_model, screen


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
    failed: int = 0
    images: int = 0


@dataclass
class SearchState:
    """Where a search is: the archive, what each evaluated digest scored on the calibration images, the
    pooled loss of each confirmed one, and the race record of each candidate racing dropped."""

    archive: Archive = field(default_factory=Archive)
    records: dict[str, EvaluationRecord] = field(default_factory=dict)
    pooled: dict[str, float] = field(default_factory=dict)
    raced_out: dict[str, EvaluationRecord] = field(default_factory=dict)

    def search_loss(self, digest: str) -> float:
        """The loss the search decides by: pooled once confirmed, else the calibration loss."""
        return self.pooled.get(digest, self.records[digest].quality_loss)


@dataclass(frozen=True)
class Scored:
    """What scoring a generation's new masks did: masks that generated images now, masks that failed, images."""

    evaluated: int
    failed: int
    images: int


# Called as each candidate of a generation is settled: (settled so far, population size).
ProgressCallback = Callable[[int, int], None]


class Search:
    """One run of the search: candidates go to a pool, records to a store; no pipeline is loaded here."""

    def __init__(
        self,
        *,
        run: str,
        pool: EvaluationPool,
        store: Store,
        template: CacheSchedule,
        settings: EvaluationSettings,
        relative_macs: Callable[[CacheSchedule], float],
        reference_loss: float,
        preset: Preset,
        population: int,
        seed: int,
        confirmation: EvaluationSettings | None = None,
        race: RaceSplit | None = None,
        adherence_floor: float | None = None,
        seeds: Sequence[CacheSchedule] = (),
        fill_genes: bool = False,
        random_share: float = 0.25,
    ) -> None:
        self.run, self.pool, self.store, self.template = run, pool, store, template
        self.relative_macs = relative_macs
        self.fill_genes = fill_genes
        self.features = MaskFeatures(template, fill_genes)
        self.preset, self.population, self.seed = preset, population, seed
        self.reference_loss = reference_loss
        self.adherence_floor = adherence_floor
        self.calibration = SplitScorer(settings, store, pool, needs_families=adherence_floor is not None)
        self.confirmation = SplitScorer(confirmation, store, pool) if confirmation else None
        self.race = race
        self.racers = (SplitScorer(race.race, store, pool), SplitScorer(race.rest, store, pool)) if race else None
        self.eval_key = self.calibration.key
        self.state = SearchState(archive=Archive(reference_loss), records=self.calibration.records)
        self.done_before = {g.index: g for g in store.generations(run)}
        length = self.template.genome_length + (FILL_GENES if fill_genes else 0)
        self.problem = Problem(n_var=length, n_obj=2, n_ieq_constr=1, xl=0, xu=1, vtype=bool)
        initial = initial_population(self.template, population, seed, random_share, seeds, fill_genes)
        self.algorithm = preset.algorithm(initial, population)
        self.algorithm.setup(self.problem, termination=NoTermination(), seed=seed, verbose=False)

    def schedule(self, genome: np.ndarray) -> CacheSchedule:
        return self.template.with_genome(genome)

    def genome_of(self, record: EvaluationRecord) -> np.ndarray:
        """A stored mask's genome as this search lays genomes out (with the fill's genes or without)."""
        return self.schedule(genome_bits(record.genome)).genome(self.fill_genes)

    def step(self, index: int, on_candidate: ProgressCallback | None = None) -> GenerationReport:
        """Ask for a population, evaluate what is new, tell the algorithm, record the generation."""
        start = time.perf_counter()
        population = self.algorithm.ask()
        if index > 0:
            population = self._offspring(population, index)
        genomes = population.get("X").astype(bool)
        schedules = [self.schedule(g) for g in genomes]
        digests = [schedule.digest() for schedule in schedules]
        unique = dict(zip(digests, schedules, strict=True))
        calibration = self.calibration
        seen_before = {digest for digest in unique if self._settled(digest)}
        calibration.load([digest for digest in unique if digest not in seen_before])
        new = {digest: schedule for digest, schedule in unique.items() if not self._settled(digest)}
        settled = len(digests) - len(new)

        def on_outcome(_: object) -> None:
            nonlocal settled
            settled += 1
            if on_candidate:
                on_candidate(settled, len(digests))

        if on_candidate:
            on_candidate(settled, len(digests))
        scored = self._score(new, on_outcome)
        from_database = len(unique) - len(seen_before) - scored.evaluated - scored.failed
        F, G = self._objectives(digests, genomes)
        self.algorithm.evaluator.eval(StaticProblem(self.problem, F=F, G=G), population)
        self.algorithm.tell(infills=population)
        for digest, genome, objectives in zip(digests, genomes, F, strict=True):
            if digest in self.state.records and self.meets_floor(digest):
                self.state.archive.add(digest, genome, (self.state.search_loss(digest), float(objectives[1])))
        confirmed = self.confirm_front()
        images = scored.images + self._images(0, confirmed)
        front = self.state.archive.front()
        hypervolume = self.state.archive.hypervolume()
        seconds = time.perf_counter() - start
        self.store.record_generation(
            self.run,
            index,
            digests,
            [p.digest for p in front],
            hypervolume,
            scored.evaluated,
            from_database,
            seconds,
            confirmed,
            images,
        )
        evaluated = scored.evaluated
        earlier = self.done_before.get(index)
        if earlier is not None:
            evaluated, from_database, seconds = earlier.evaluated, earlier.memo_hits, earlier.wall_time_s
            confirmed = earlier.confirmed
            images = self._images(evaluated, confirmed) if earlier.images is None else earlier.images
        duplicates = len(digests) - evaluated - from_database - scored.failed
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
            scored.failed,
            images,
        )

    def _images(self, evaluated: int, confirmed: int) -> int:
        """The images of `evaluated` full calibration evaluations and `confirmed` confirmations."""
        per_confirmation = self.confirmation.settings.num_images if self.confirmation else 0
        return evaluated * self.calibration.settings.num_images + confirmed * per_confirmation

    def _settled(self, digest: str) -> bool:
        """Whether this run already knows what a mask scored: on the calibration images, or as raced out."""
        return self.calibration.known(digest) or digest in self.state.raced_out

    def _score(self, new: dict[str, CacheSchedule], on_outcome: Callable[[object], None]) -> Scored:
        """Score the masks new to this run on the calibration images, or race them when racing is on."""
        if self.race is not None and self.racers is not None:
            return self._race(self.race, *self.racers, new, on_outcome)
        calibration = self.calibration
        evaluated_before, failed_before = calibration.evaluated, len(calibration.failed_here)
        calibration.scores(new, on_outcome)
        evaluated = calibration.evaluated - evaluated_before
        return Scored(evaluated, len(calibration.failed_here) - failed_before, self._images(evaluated, 0))

    def _race(
        self,
        split: RaceSplit,
        race: SplitScorer,
        rest: SplitScorer,
        new: dict[str, CacheSchedule],
        on_outcome: Callable[[object], None],
    ) -> Scored:
        """Score every new mask on the race prompts, drop those the front beats there, finish the others on the
        rest of the prompts and store their merged calibration records. Every mask is judged against the front
        as it was before this generation, so the outcome does not depend on the order results arrive in."""
        generated: set[str] = set()
        images = 0

        def counted(scorer: SplitScorer, then: Callable[[object], None] | None = None) -> Callable[[object], None]:
            def on(outcome: object) -> None:
                nonlocal images
                if isinstance(outcome, EvaluationRecord):
                    generated.add(outcome.digest)
                    images += scorer.settings.num_images
                if then:
                    then(outcome)

            return on

        failed_before = len(race.failed_here) + len(rest.failed_here)
        raced = race.scores(new, counted(race))
        rivals = self._rivals(split)
        finishing = {}
        for digest, schedule in new.items():
            record = raced.get(digest)
            if record is not None and not beaten(record.scores["prompt_scores"], record.cost, rivals):
                finishing[digest] = schedule
                continue
            if record is not None:
                self.state.raced_out[digest] = record
            on_outcome(record)
        finish(split, self.calibration, rest, raced, finishing, counted(rest, on_outcome))
        failed = len(race.failed_here) + len(rest.failed_here) - failed_before
        return Scored(len(generated), failed, images)

    def _rivals(self, split: RaceSplit) -> list[Rival]:
        """The archive's front as a race sees it: each member's search loss, cost and race-prompt scores."""
        confirmed = self.confirmation.records if self.confirmation else {}
        return [
            Rival(
                point.objectives[0],
                point.objectives[1],
                split.race_units(self.search_scores(point.digest, pooled=point.digest in confirmed)),
            )
            for point in self.state.archive.front()
        ]

    def _objectives(self, digests: list[str], genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NSGA-II's objectives and constraint: a failed candidate is infeasible at the worst loss and full cost;
        with `forbid_no_cache`, so is the no-cache mask (at least one computation must be reused); with an
        `adherence_floor`, so is a mask whose images show the prompt less often (by how far, in points / 100)."""
        known = {**self.state.raced_out, **self.state.records}
        failed = np.array([d not in known for d in digests])
        worst = (self.reference_loss, 1.0)
        F = np.array([(known[d].quality_loss, known[d].cost) if d in known else worst for d in digests])
        G = np.where(failed, 1.0, 0.0)
        if self.adherence_floor is not None:
            shortfall = [self.adherence_floor - self.adherence(known[d]) if d in known else 0.0 for d in digests]
            G = np.maximum(G, np.asarray(shortfall) / 100)
        if self.preset.forbid_no_cache:
            G = np.maximum(G, 1.0 - (~genomes[:, : self.template.genome_length]).sum(axis=1))
        return F, G[:, None]

    @staticmethod
    def adherence(record: EvaluationRecord) -> float:
        return mean(ADHERENCE.values(record.scores)) or 0.0

    def meets_floor(self, digest: str) -> bool:
        """Whether a scored mask may enter the archive: its images show the prompt at least as often as the
        `adherence_floor` asks (always, without a floor)."""
        floor = self.adherence_floor
        return floor is None or self.adherence(self.state.records[digest]) >= floor

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
        front is confirmed (a member whose pooled loss rises can let another in; one that could not be scored
        takes the worst loss). Returns how many were scored now; without a confirmation split, nothing happens."""
        if self.confirmation is None:
            return 0
        before = self.confirmation.evaluated
        while pending := {
            p.digest: self.schedule(p.genome) for p in self.state.archive.front() if p.digest not in self.state.pooled
        }:
            confirmed = self.confirmation.scores(pending)
            for digest in pending:
                record = confirmed.get(digest)
                loss = self.reference_loss if record is None else pooled_loss(self.state.records[digest], record)
                self.state.pooled[digest] = loss
                self.state.archive.rescore(digest, (loss, self.state.archive.points[digest].objectives[1]))
        return self.confirmation.evaluated - before

    def _offspring(self, bred: Population, index: int) -> Population:
        """The candidates of generation `index` from what NSGA-II bred: the front refinement's share
        (`refine_share` of the population) as unseen one-move neighbours of the front, the rest NSGA-II's
        offspring. With `screen` > 1, NSGA-II bred that many times the population and the refinement proposes
        that many neighbours per place, and the surrogate picks which are generated (`surrogate.py`)."""
        genomes = bred.get("X").astype(bool)
        size = min(self.population, len(bred))
        places = min(round(self.preset.refine_share * self.population), size)
        neighbours = self._refinements(genomes, index, places * self.preset.screen) if places else []
        model = self.loss_model()
        if neighbours:
            neighbours = [neighbours[i] for i in self._screened(model, np.stack(neighbours), places)]
        chosen = self._screened(model, genomes, size - len(neighbours))
        spare = np.setdiff1d(np.arange(len(bred)), chosen)[: len(neighbours)]
        for row, genome in zip(spare, neighbours, strict=True):
            bred[row].set("X", genome)
        return bred[np.concatenate([chosen, spare]).astype(int)]

    def loss_model(self) -> LossModel | None:
        """The surrogate fitted on every calibration evaluation of a mask this run holds (in digest order, so
        that the fit does not depend on the order in which workers returned them); None when screening is off."""
        if self.preset.screen <= 1:
            return None
        masks = sorted(d for d, record in self.state.records.items() if record.genome)  # not fewer-steps runs
        records = [self.state.records[d] for d in masks]
        if len(records) < MIN_EVALUATIONS:
            return None
        genomes = np.stack([self.genome_of(r) for r in records])
        return fit_loss_model(self.features(genomes), np.array([r.quality_loss for r in records]))

    def _screened(self, model: LossModel | None, genomes: np.ndarray, count: int) -> np.ndarray:
        """Indices of the `count` genomes worth generating (the first `count` without a model)."""
        if model is None or count >= len(genomes):
            return np.arange(min(count, len(genomes)))
        costs = np.array([self.relative_macs(self.schedule(g)) for g in genomes])
        front = [(p.objectives[0], self.relative_macs(self.schedule(p.genome))) for p in self.state.archive.front()]
        return screen(model, self.features(genomes), costs, front, count)

    def _refinements(self, offspring: np.ndarray, index: int, count: int) -> list[np.ndarray]:
        """Up to `count` unseen one-move neighbours of the front.

        The front is visited in turn (cheapest first, continuing each generation where the last one stopped).
        The moves come from a generator seeded by the run's seed and the generation index, and the front is
        the archive's, which a replay rebuilds exactly, so a resumed run asks for the same candidates.
        """
        length = self.template.genome_length
        front = [p.genome for p in self.state.archive.front()]
        start = (index * count) % len(front)
        known = [*offspring, *(p.genome for p in self.state.archive.points.values())]
        seen = {g[:length].tobytes() for g in known}
        rng = np.random.default_rng([self.seed, index])
        parents = front[start:] + front[:start]
        masks = [parent[:length] for parent in parents]
        local = front_neighbours(masks, count, self.template.genes_per_step, rng, seen)
        # A move changes the mask; the neighbour keeps its parent's fill.
        return [np.concatenate([mask, parents[i % len(parents)][length:]]) for i, mask in local]
