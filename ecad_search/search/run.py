"""A whole search run: open the store, load the evaluator, (construct,) run the generations, score the claims
on held-out images, and record how the run ended, however it ends. It emits events for observers (progress
display, output writer, status line) to show and write; it prints nothing itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import cast

import numpy as np

from .. import __version__
from ..construct import CONSTRUCTION_SEEDS, Constructed
from ..evaluation import EvaluationSettings, run_template, schedule_macs
from ..families import objective_reference_loss
from ..fewer_steps import FewerSteps, fewer_steps_within
from ..metrics import get_metric
from ..pool import Candidate, EvaluationPool, genome_bits, make_pool
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, Store, signals_held
from ..verdict import ClaimRules
from .baselines import BaselineComparison, compare_with_baselines, verdict_lines
from .constructed import construct_for_run, prediction_check
from .driver import GenerationReport, Search
from .prepared import PreparedSearch
from .presets import Preset, get_preset
from .racing import prompt_race, runnable_preset
from .seeding import fora_reference
from .splits import SplitScorer

# Cost budgets (fractions of the uncached run) at which the progress display shows the front's best loss.
STANDING_BUDGETS = (0.5, 0.35, 0.25)


@dataclass(frozen=True)
class Standing:
    """Where the search stands after a generation, by its own loss (held-out figures come at the end): the
    front's best loss at a few cost budgets, and how many front entrants the guard re-scored."""

    hypervolume: float
    front_size: int
    losses_at: tuple[tuple[float, float | None], ...]
    confirmed: int

    def lines(self) -> tuple[str, str]:
        budgets = " · ".join(
            f"≤{budget:.0%}: {'-' if loss is None else f'{loss:.3g}'}" for budget, loss in self.losses_at
        )
        return (
            f"HV {self.hypervolume:.4f} · front {self.front_size} · confirmed {self.confirmed}",
            f"search loss at cost {budgets}",
        )


class SearchObserver:
    """Receives a run's events; every method is optional (a no-op here)."""

    def started(self, run: SearchRun) -> None:
        """The run is open in the database and about to score its baselines."""

    def note(self, text: str) -> None:
        """Something a person should read, that stays (what a phase cost, a warning)."""

    def phase(self, text: str) -> None:
        """What is being done outside the generations (FORA baselines, held-out scoring), until the next note."""

    def candidate_scored(self, settled: int, total: int) -> None:
        """`settled` of the generation's `total` candidates are scored (or found, or failed)."""

    def generation_done(self, run: SearchRun, report: GenerationReport, standing: Standing) -> None:
        """A generation ran (or was replayed from the database)."""

    def held_out_scored(self, run: SearchRun) -> None:
        """The claims' schedules are scored on the held-out images: the run's results are final."""

    def run_ended(self, run: SearchRun, status: str, message: str) -> None:
        """The run ended as `status` (finished, interrupted, failed); `message` says what to do next."""


class Observers(SearchObserver):
    """Several observers, each told every event in turn."""

    def __init__(self, observers: Sequence[SearchObserver] = ()) -> None:
        self.observers = tuple(observers)

    def started(self, run: SearchRun) -> None:
        for observer in self.observers:
            observer.started(run)

    def note(self, text: str) -> None:
        for observer in self.observers:
            observer.note(text)

    def phase(self, text: str) -> None:
        for observer in self.observers:
            observer.phase(text)

    def candidate_scored(self, settled: int, total: int) -> None:
        for observer in self.observers:
            observer.candidate_scored(settled, total)

    def generation_done(self, run: SearchRun, report: GenerationReport, standing: Standing) -> None:
        for observer in self.observers:
            observer.generation_done(run, report, standing)

    def held_out_scored(self, run: SearchRun) -> None:
        for observer in self.observers:
            observer.held_out_scored(run)

    def run_ended(self, run: SearchRun, status: str, message: str) -> None:
        for observer in self.observers:
            observer.run_ended(run, status, message)


class SearchRun:
    """Runs a prepared search, keeps its outputs current, and records how the run ended, however it ends.

    The pool loads the calibration split (pipeline, metric weights, uncached references) before the database
    is opened, so a model or metric that cannot load leaves no trace in the database. From the moment the run
    is marked `running` (`start`, the first thing `run` does), every way out (finished, an error, Ctrl-C,
    SIGTERM) sets its status. The confirmation and held-out splits go to the same pool, which loads each only
    when it has something to score that the database does not already hold. The run itself loads no
    pipeline: its schedules and their MACs come from the registry entry.
    """

    search: Search  # set by `start`

    def __init__(
        self,
        prepared: PreparedSearch,
        pool: EvaluationPool | None = None,
        preset: Preset | None = None,
    ):
        self.prepared = prepared
        self.events: SearchObserver = Observers()
        config, settings = prepared.config, prepared.settings
        self.pool = pool or make_pool(
            prepared.spec,
            config.device,
            workers=config.workers,
            address=config.ray_address,
            gpus_per_worker=config.gpus_per_worker,
            prefix_mib=config.prefix_memory,
        )
        preset = runnable_preset(preset or get_preset(config.preset), settings)
        race = prompt_race(settings, preset.race)
        splits = prepared.splits
        raced = (race.race, race.rest) if race else ()
        self.strategy = config.strategy
        self.construction = (
            replace(settings, images_per_prompt=CONSTRUCTION_SEEDS) if self.strategy != "evolve" else None
        )
        upcoming = [
            split for split in (self.construction, *raced, splits.confirmation, splits.held_out) if split is not None
        ]
        self.seconds_per_image = self.pool.prepare(settings, upcoming)
        self.preset, self.race = preset, race
        self.template = run_template(prepared.spec, settings)
        self.full_macs = schedule_macs(self.template, prepared.spec, settings)
        self.store = Store(config.db)
        self.generation: int | None = None
        self.running = False
        self.reports: list[GenerationReport] = []
        self.baselines: dict[str, EvaluationRecord] = {}
        self.baseline_candidates: dict[str, Candidate] = {}
        self.baselines_evaluated = 0
        self.held_out = SplitScorer(prepared.splits.held_out, self.store, self.pool, needs_families=True)
        self.constructed: dict[str, Constructed] = {}

    def start(self) -> None:
        """Mark the run `running` (created, or resumed with the same options), then pick up its search where
        it stood. A signal that arrives meanwhile waits until `running` says so, so that `_ending_recorded`
        records how the run ended."""
        prepared, settings = self.prepared, self.prepared.settings
        config = prepared.config
        with signals_held():
            self.store.start_run(
                prepared.run,
                config.identity(),
                settings.key(),
                prepared.spec.name,
                settings.metric,
                config.seed,
                __version__,
                generations_planned=config.generations,
            )
            self.running = True
        relative_macs = lambda schedule: schedule_macs(schedule, prepared.spec, settings) / self.full_macs  # noqa: E731
        seeds = self.construct(relative_macs) if self.construction is not None else []
        alone = self.strategy == "construct"  # the first population is FORA and the constructed front, all of it
        population = len({s.digest() for s in [*fora_reference(self.template), *seeds]}) if alone else None
        self.search = Search(
            run=prepared.run,
            pool=self.pool,
            store=self.store,
            template=self.template,
            settings=settings,
            relative_macs=relative_macs,
            reference_loss=objective_reference_loss(settings.objective, get_metric(settings.metric)),
            preset=self.preset,
            population=population or prepared.population,
            seed=config.seed,
            confirmation=prepared.splits.confirmation,
            race=self.race,
            adherence_floor=config.adherence_floor,
            seeds=seeds,
            fill_genes=self.construction is not None,
            random_share=0.0 if alone else 0.25,
        )

    def construct(self, relative_macs: Callable[[CacheSchedule], float]) -> list[CacheSchedule]:
        """The constructed front, in the order the first population takes it (`search.constructed`)."""
        settings = cast(EvaluationSettings, self.construction)
        front = construct_for_run(
            self.prepared, self.template, settings, self.pool, self.store, relative_macs, self.events
        )
        self.constructed = {c.schedule.digest(): c for c in front}
        return [c.schedule for c in front]

    def evaluate_baselines(self) -> None:
        """FORA every-N up to N=6, and the uncached pipeline at the most steps each of them affords, scored
        once (memoised like any candidate): the front's yardsticks. A baseline that could not be scored is left
        out of the comparisons."""
        named = self.baseline_settings()
        candidates = {candidate.digest(): candidate for candidate in named.values()}
        calibration = self.search.calibration
        before = calibration.evaluated
        settled = 0

        def on_outcome(_: object) -> None:
            nonlocal settled
            settled += 1
            self.events.phase(f"baselines: {settled}/{len(candidates)}")

        records = calibration.scores(candidates, on_outcome)
        self.baselines = {name: records[c.digest()] for name, c in named.items() if c.digest() in records}
        self.baseline_candidates = {name: named[name] for name in self.baselines}
        self.baselines_evaluated = calibration.evaluated - before

    def baseline_settings(self) -> dict[str, Candidate]:
        """FORA-2…6 by name, then "k steps" for each distinct step count their MACs afford."""
        fora = {schedule.name: schedule for schedule in fora_reference(self.search.template)}
        steps = self.prepared.settings.steps
        fewer = [fewer_steps_within(self.search.relative_macs(s), steps) for s in fora.values()]
        named: dict[str, Candidate] = dict(fora)
        named.update({f.label: f for f in fewer if f is not None and f.steps < steps})
        return named

    def claim_rules(self) -> ClaimRules:
        """How this run's claims are judged: the family its search minimised first, the margins it was given."""
        return self.prepared.claim_rules()

    def run(self, observers: Sequence[SearchObserver] = ()) -> list[GenerationReport]:
        """Start (or resume) the run and go through its generations, telling `observers` what happens; then
        score the claims' schedules on the held-out images."""
        self.events = Observers(observers)
        generations = self.prepared.config.generations
        with self._ending_recorded():
            self.start()
            self.events.started(self)
            self._announce_cost()
            self.evaluate_baselines()
            stored = len(self.baselines) - self.baselines_evaluated
            self.events.note(
                f"baselines: {len(self.baselines)} FORA and fewer steps ({self.baselines_evaluated} scored now, "
                f"{stored} from the database)"
            )
            for index in range(generations):
                self.generation = index
                report = self.search.step(index, self.events.candidate_scored)
                self.reports.append(report)
                self.events.generation_done(self, report, self.standing(report))
                if index == 0 and (check := prediction_check(self.constructed, self.search.state.records)):
                    self.events.note(check)
            self.score_held_out()
            self.events.held_out_scored(self)
            with signals_held():
                self.store.set_status(self.prepared.run, "finished")
                self.running = False
            self.events.run_ended(self, "finished", "")
        return self.reports

    def score_held_out(self) -> None:
        """The FORA baselines, their rivals (or the whole final front) and the uncached model (its images are
        the split's references: only judged) on the held-out images; what was scored before is not paid for
        again."""
        if self.prepared.config.held_out == "front":
            records = [self.search.state.records[p.digest] for p in self.search.state.archive.front()]
        else:
            records = [c.rival for c in self.versus_baselines() if c.rival is not None]
        schedules: dict[str, Candidate] = {record.digest: self.search.schedule(_genome(record)) for record in records}
        schedules.update({candidate.digest(): candidate for candidate in self.baseline_candidates.values()})
        schedules[self.template.digest()] = self.template
        settings = self.prepared.splits.held_out
        self.events.phase(f"held out: scoring up to {len(schedules)} schedules, {settings.num_images} images each")
        before = self.held_out.evaluated
        self.held_out.scores(schedules)
        self.events.note(
            f"held out: {len(schedules)} schedules ({self.held_out.evaluated - before} scored now), "
            f"{settings.num_images} images each"
        )

    @contextmanager
    def _ending_recorded(self) -> Iterator[None]:
        """Whatever stops the work inside (Ctrl-C, SIGTERM, an error) once the run was started is recorded as
        the run's status; before that, the run was left as it was."""
        try:
            yield
        except KeyboardInterrupt:
            if self.running:
                index = self.generation
                where = "before its first generation" if index is None else f"in generation {index + 1}"
                self._ended("interrupted", f"stopped {where}; re-run the same command to resume")
            raise
        except BaseException:
            if self.running:
                self._ended("failed", "")
            raise

    def _ended(self, status: str, message: str) -> None:
        """Record how the run ended; a database that cannot be reached any more must not hide the cause."""
        try:
            self.store.set_status(self.prepared.run, status)
        except Exception as err:  # the original exception is the one to report
            self.events.note(f"could not record status '{status}' of run {self.prepared.run}: {err}")
        self.events.run_ended(self, status, message)

    def _announce_cost(self) -> None:
        """What a generation will take, once the uncached run was timed (metrics with references, latency)."""
        seconds = self.seconds_per_image * self.prepared.settings.num_images
        if seconds:
            population = self.prepared.population
            self.events.note(
                f"uncached {seconds:.1f} s per candidate: ~{_duration(seconds * population)} per generation "
                f"of {population}"
            )

    def standing(self, report: GenerationReport) -> Standing:
        """The front's best search loss within a few cost budgets."""
        front = self.search.state.archive.front()
        losses = tuple(
            (budget, min((p.objectives[0] for p in front if p.objectives[1] <= budget), default=None))
            for budget in STANDING_BUDGETS
        )
        return Standing(report.hypervolume, len(front), losses, report.confirmed)

    def summary(self) -> str:
        """What this invocation did and what the front claims on held-out images, in a few lines."""
        done = [r for r in self.reports if not r.replayed]
        evaluated = self.baselines_evaluated + sum(r.evaluated for r in done)
        comparisons = self.versus_baselines()
        held_out = self.prepared.splits.held_out
        lines = [
            f"run {self.prepared.run}: {len(self.reports)} generations ({len(done)} now), "
            f"HV {self.reports[-1].hypervolume:.4f}",
            f"{evaluated} new evaluations · {sum(r.from_database for r in done)} from the database · "
            f"{sum(r.duplicates for r in done)} duplicates · {sum(r.confirmed for r in done)} confirmed"
            + (f" · {failed} failed" if (failed := sum(r.failed for r in done)) else ""),
            f"held out: {held_out.num_images} images ({_describe_images(held_out)})",
            *verdict_lines(comparisons),
            f"outputs: {self.prepared.out}/ (vs_fora.md compares)",
        ]
        if self.pool.workers:
            lines.insert(2, self.pool.status.line())
        return "\n".join(lines)

    def versus_baselines(self) -> list[BaselineComparison]:
        """Each FORA baseline against the front's best schedule at no more MACs, chosen by the search's own
        loss and judged on the held-out images when they are scored."""
        state = self.search.state
        front = [state.records[point.digest] for point in state.archive.front()]
        held_out = self.held_out.records
        guarded = self.prepared.config.guard in ("both", "paired")
        significantly_better = self.search.significantly_better if guarded else None
        fora = {name for name, candidate in self.baseline_candidates.items() if not isinstance(candidate, FewerSteps)}
        uncached = held_out.get(self.template.digest())
        return compare_with_baselines(
            front, self.baselines, state.search_loss, held_out, significantly_better, self.claim_rules(), fora, uncached
        )


def _genome(record: EvaluationRecord) -> np.ndarray:
    return genome_bits(record.genome)


def _describe_images(settings: EvaluationSettings) -> str:
    seeds = settings.images_per_prompt
    return f"{len(settings.prompts)} prompts × {seeds} seed{'s' if seeds > 1 else ''} from {settings.seed}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
