"""A whole search run as the command line starts it: check the options, open the store, load the evaluator,
run the generations with a progress display, and write the outputs after each generation.

Every option is checked before anything is written, so a bad option leaves the database and the output
folder untouched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from .. import __version__
from ..cost.latency import UNCACHED, LatencyModel, latency_probes
from ..evaluation import COSTS, EvaluationSettings, run_template, schedule_macs
from ..files import write_atomic
from ..formats import save_schedule
from ..generation import resolve_device
from ..heuristics import fora
from ..metrics import get_metric
from ..models import ModelSpec, block_groups, get_family, get_model
from ..options import (
    LARGE_IMAGES_PER_CANDIDATE,
    MAX_BATCH_SIZE,
    MAX_GENERATIONS,
    MAX_IMAGES_PER_PROMPT,
    MAX_POPULATION,
    MAX_PREFIX_MIB,
    MAX_WORKERS,
    RAY_EXTRA,
    check_guidance,
    check_range,
    check_schedule_steps,
    check_seed,
)
from ..pool import EvaluationPool, genome_bits, make_pool
from ..prompts import default_prompt_file, held_out_prompt_file, load_prompts
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, Store, signals_held
from .budget import BudgetOutcome, BudgetPlan, BudgetSearch, Moves, Scoring
from .config import GUARDS, HELD_OUT_SCOPES, SearchConfig, SearchOptionError
from .driver import GenerationReport, Search
from .presets import Preset, get_preset
from .progress import SearchProgress, Standing
from .racing import IncumbentRace, RaceSplit, race_split
from .report import (
    BaselineComparison,
    FrontEntry,
    ScoredRecord,
    baseline_table,
    compare_with_baselines,
    describe,
    pareto_plot,
    write_front,
    write_history,
    write_tables,
)
from .seeding import check_population_size, fora_reference
from .splits import Splits, SplitScorer, distinct_prompts, make_splits
from .stats import paired_difference

# Cost budgets (fractions of the uncached run) at which the progress display shows the front's best loss.
STANDING_BUDGETS = (0.5, 0.35, 0.25)


@dataclass(frozen=True)
class PreparedSearch:
    """Checked options: the model, the image splits and the names derived from them; `notes` are what the
    user should read before the run starts (prompts collapsed, say)."""

    config: SearchConfig
    spec: ModelSpec
    splits: Splits
    population: int
    run: str
    out: Path
    notes: tuple[str, ...] = ()

    @property
    def settings(self) -> EvaluationSettings:
        """The calibration settings: what every candidate is scored on."""
        return self.splits.calibration


def prepare(config: SearchConfig) -> PreparedSearch:
    """Validate every option and derive the run's settings; raises one-line errors, writes nothing.

    The model's defaults fill the options left unset, so the run's identity names what actually ran.
    """
    check_range("--generations", config.generations, 1, MAX_GENERATIONS)
    check_seed(config.seed)
    _check_workers(config)
    if config.cost not in COSTS:
        raise SearchOptionError(f"unknown cost '{config.cost}': use one of {', '.join(COSTS)}")
    _check_choice("guard", config.guard, GUARDS)
    _check_choice("held-out scope", config.held_out, HELD_OUT_SCOPES)
    spec = get_model(config.model)
    config = replace(
        config,
        guard=spec.guard if config.guard is None else config.guard,
        batch_size=spec.batch_size if config.batch_size is None else config.batch_size,
    )
    check_range("--batch-size", config.batch_size, 0, MAX_BATCH_SIZE, "0 puts all images in one call")
    preset = get_preset(config.preset)
    population = check_range(
        "--population", preset.population if config.population is None else config.population, 4, MAX_POPULATION
    )
    images = _images_per_prompt("--images-per-prompt", config.images_per_prompt, spec.calibration_images_per_prompt)
    held_out_images = _images_per_prompt(
        "--held-out-images-per-prompt", config.held_out_images_per_prompt, spec.held_out_images_per_prompt
    )
    steps = spec.default_steps if config.steps is None else check_schedule_steps(config.steps)
    resolution = spec.resolution if config.resolution is None else config.resolution
    get_family(spec).check_resolution(spec, resolution)
    guidance = spec.guidance_scale if config.guidance is None else check_guidance(config.guidance)
    metric = config.metric or spec.metric
    get_metric(metric).check(spec)
    _check_images_for_metric(metric, images, held_out_images)
    prompt_file = config.prompts or default_prompt_file(spec.family)
    prompts, notes = _distinct(spec, load_prompts(prompt_file), "calibration")
    held_out_file = config.held_out_prompts or held_out_prompt_file(prompt_file)
    held_out, held_out_notes = (
        _distinct(spec, load_prompts(held_out_file), "held-out") if held_out_file else (prompts, [])
    )
    Store.validate_url(config.db)
    config = replace(config, device=resolve_device(config.device))
    settings = EvaluationSettings(
        model=spec.name,
        metric=metric,
        prompts=prompts,
        images_per_prompt=images,
        steps=steps,
        guidance_scale=guidance,
        resolution=resolution,
        seed=config.seed,
        cost=config.cost,
        batch_size=config.batch_size,
    )
    check_population_size(CacheSchedule.all_compute(block_groups(spec), steps), population)
    run = config.run or _run_name(config, metric, runnable_preset(preset, settings))
    out = Path(config.out) / _safe(run)
    check_writable_folder(out, "--out", config.db)
    splits = make_splits(settings, held_out, held_out_images, confirm=config.guard in ("both", "confirm"))
    return PreparedSearch(config, spec, splits, population, run, out, tuple(notes + held_out_notes))


def _check_workers(config: SearchConfig) -> None:
    check_range("--workers", config.workers, 0, MAX_WORKERS)
    check_range("--prefix-memory", config.prefix_memory, 0, MAX_PREFIX_MIB, "MiB; 0 shares no prefix")
    if not 0 < config.gpus_per_worker <= 8:
        raise SearchOptionError(f"--gpus-per-worker must be above 0 and at most 8, got {config.gpus_per_worker}")
    if config.workers or config.ray_address:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SearchOptionError(
                f"--workers and --ray-address need Ray, which is not installed: {RAY_EXTRA}"
            ) from None


def _check_choice(what: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise SearchOptionError(f"unknown {what} '{value}': use one of {', '.join(choices)}")


def _images_per_prompt(option: str, given: int | None, default: int) -> int:
    return default if given is None else check_range(option, given, 1, MAX_IMAGES_PER_PROMPT)


def _check_images_for_metric(metric: str, *images_per_prompt: int) -> None:
    needed = get_metric(metric).min_images_per_prompt
    if min(images_per_prompt) < needed:
        raise SearchOptionError(
            f"metric '{metric}' needs at least {needed} seeds per prompt on every split: "
            "raise --images-per-prompt and --held-out-images-per-prompt"
        )


def _distinct(spec: ModelSpec, prompts: tuple[str, ...], which: str) -> tuple[tuple[str, ...], list[str]]:
    """Prompts the model sees alike collapsed to one (the digits model sees only the digit), with a note."""
    kept, dropped = distinct_prompts(prompts, get_family(spec).conditioning_key)
    if not dropped:
        return kept, []
    note = (
        f"{len(prompts)} {which} prompts give only {len(kept)} distinct images per seed on {spec.name} (it sees "
        f"the same conditioning for {dropped} of them): using {len(kept)}; add seeds for more distinct images"
    )
    return kept, [note]


def check_writable_folder(folder: Path, option: str, db: str) -> None:
    """The folder exists and is writable, or can be created, and the --db file is not in its way: checked
    before any image is generated (and before the database is created)."""
    database = Store.local_file(db)
    if database is not None and database.absolute() in (folder.absolute(), *folder.absolute().parents):
        raise SearchOptionError(f"{option} {folder}: the --db file {database} is in its way; give another folder")
    for existing in (folder, *folder.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise SearchOptionError(f"{option} {folder}: {existing} is a file, not a folder; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SearchOptionError(f"{option} {folder}: cannot write in {existing}; give a writable folder")


def runnable_preset(preset: Preset, settings: EvaluationSettings) -> Preset:
    """The preset as it runs on these settings: no racing where the metric's units are not prompts (a Fréchet
    distance) or where there are too few prompts to race."""
    if preset.race and prompt_race(settings, preset.race) is None:
        return replace(preset, race=0.0)
    return preset


def prompt_race(settings: EvaluationSettings, share: float) -> RaceSplit | None:
    """The race over `share` of the calibration prompts; None where the metric's units are not prompts (a
    Fréchet distance) or there are too few prompts to race."""
    if share <= 0 or not get_metric(settings.metric).units_are_prompts:
        return None
    return race_split(settings, share)


def _run_name(config: SearchConfig, metric: str, preset: Preset) -> str:
    """Named by the options and by what the preset is, so that a preset changed by an upgrade starts a new run
    (sharing the old one's evaluations) instead of replaying the old one's generations differently."""
    identity = {**config.identity(), "preset": preset.identity()}
    digest = hashlib.sha256(repr(sorted(identity.items())).encode()).hexdigest()[:8]
    return f"{Path(config.model).name}-{metric}-{config.preset}-s{config.seed}-{digest}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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
        console: Console | None = None,
        pool: EvaluationPool | None = None,
        preset: Preset | None = None,
    ):
        self.prepared = prepared
        self.console = console or Console()
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
        upcoming = [split for split in (*raced, splits.confirmation, splits.held_out) if split is not None]
        self.seconds_per_image = self.pool.prepare(settings, upcoming)
        self.preset, self.race = preset, race
        self.template = run_template(prepared.spec, settings)
        self.full_macs = schedule_macs(self.template, prepared.spec, settings)
        self.store = Store(config.db)
        self.generation: int | None = None
        self.running = False
        self.reports: list[GenerationReport] = []
        self.baselines: dict[str, EvaluationRecord] = {}
        self.baselines_evaluated = 0
        self.held_out = SplitScorer(prepared.splits.held_out, self.store, self.pool)

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
        self.search = Search(
            run=prepared.run,
            pool=self.pool,
            store=self.store,
            template=self.template,
            settings=settings,
            relative_macs=lambda schedule: schedule_macs(schedule, prepared.spec, settings) / self.full_macs,
            reference_loss=get_metric(settings.metric).reference_loss,
            preset=self.preset,
            population=prepared.population,
            seed=config.seed,
            confirmation=prepared.splits.confirmation,
            race=self.race,
        )

    def evaluate_baselines(self, progress: SearchProgress | None = None) -> None:
        """FORA every-N up to N=6, scored once (memoised like any candidate): the front's yardstick. A baseline
        that could not be scored is left out of the comparisons."""
        schedules = {schedule.digest(): schedule for schedule in fora_reference(self.search.template)}
        calibration = self.search.calibration
        before = calibration.evaluated
        settled = 0

        def on_outcome(_: object) -> None:
            nonlocal settled
            settled += 1
            if progress:
                progress.phase(f"FORA baselines: {settled}/{len(schedules)}")

        records = calibration.scores(schedules, on_outcome)
        self.baselines = {s.name: records[d] for d, s in schedules.items() if d in records}
        self.baselines_evaluated = calibration.evaluated - before

    def run(self) -> list[GenerationReport]:
        config = self.prepared.config
        generations = config.generations
        with self._ending_recorded():
            self.start()
            self.prepared.out.mkdir(parents=True, exist_ok=True)
            self._announce_cost()
            workers = (lambda: self.pool.status) if self.pool.workers else None
            with SearchProgress(self.console, generations, self.prepared.population, workers=workers) as progress:
                self.evaluate_baselines(progress)
                stored = len(self.baselines) - self.baselines_evaluated
                progress.note(
                    f"FORA baselines: {len(self.baselines)} ({self.baselines_evaluated} scored now, {stored} from "
                    "the database)"
                )
                for index in range(generations):
                    self.generation = index
                    report = self.search.step(index, progress.candidate)
                    self.reports.append(report)
                    if not report.replayed and index < generations - 1:
                        self.write_outputs(index)
                    progress.generation(report, self.standing(report))
                self.score_held_out(progress)
                self.write_outputs(generations - 1)
            with signals_held():
                self.store.set_status(self.prepared.run, "finished")
                self.running = False
        return self.reports

    def score_held_out(self, progress: SearchProgress | None = None) -> None:
        """The FORA baselines and their rivals (or the whole final front) on the held-out images; what was
        scored before is not paid for again."""
        if self.prepared.config.held_out == "front":
            records = [self.search.state.records[p.digest] for p in self.search.state.archive.front()]
        else:
            records = [c.rival for c in self.versus_baselines() if c.rival is not None]
        records += list(self.baselines.values())
        schedules = {record.digest: self.search.schedule(_genome(record)) for record in records}
        settings = self.prepared.splits.held_out
        if progress:
            progress.phase(f"held out: scoring up to {len(schedules)} schedules, {settings.num_images} images each")
        before = self.held_out.evaluated
        self.held_out.scores(schedules)
        if progress:
            progress.note(
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
            self.console.print(f"could not record status '{status}' of run {self.prepared.run}: {err}")
        if message:
            self.console.print(f"run {self.prepared.run} {message}", soft_wrap=True, highlight=False)

    def _announce_cost(self) -> None:
        """What a generation will take, once the uncached run was timed (metrics with references, latency)."""
        seconds = self.seconds_per_image * self.prepared.settings.num_images
        if seconds:
            population = self.prepared.population
            self.console.print(
                f"uncached {seconds:.1f} s per candidate: ~{_duration(seconds * population)} per generation "
                f"of {population}",
                soft_wrap=True,
                highlight=False,
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
        labels = ("better", "tie", "worse", "FORA kept")
        verdicts = {label: [c.name for c in comparisons if c.verdict.startswith(label)] for label in labels}
        held_out = self.prepared.splits.held_out
        lines = [
            f"run {self.prepared.run}: {len(self.reports)} generations ({len(done)} now), "
            f"HV {self.reports[-1].hypervolume:.4f}",
            f"{evaluated} new evaluations · {sum(r.from_database for r in done)} from the database · "
            f"{sum(r.duplicates for r in done)} duplicates · {sum(r.confirmed for r in done)} confirmed"
            + (f" · {failed} failed" if (failed := sum(r.failed for r in done)) else ""),
            f"held out: {held_out.num_images} images ({_describe_images(held_out)})",
            f"vs {len(comparisons)} FORA at ≤ MACs: better {len(verdicts['better'])}"
            + (f" ({', '.join(verdicts['better'])})" if verdicts["better"] else "")
            + f" · tie {len(verdicts['tie'])} · worse {len(verdicts['worse'])} · FORA kept "
            f"{len(verdicts['FORA kept'])}",
            f"outputs: {self.prepared.out}/ (vs_fora.md compares)",
        ]
        if self.pool.workers:
            lines.insert(2, self.pool.status.line())
        return "\n".join(lines)

    def front_entries(self, index: int) -> list[FrontEntry]:
        state = self.search.state
        held_out = self.held_out.records
        entries = []
        for rank, point in enumerate(state.archive.front()):
            record = state.records[point.digest]
            scored = ScoredRecord(record, state.search_loss(point.digest), held_out.get(point.digest))
            schedule = describe(
                self.search.schedule(point.genome),
                scored,
                self.prepared,
                generation=index,
                rank=rank,
                full_macs=self.full_macs,
            )
            name = f"rank{rank:02d}-loss{scored.loss:.4f}-macs{record.cost:.3f}.json"
            entries.append(FrontEntry(schedule, scored, name))
        return entries

    def versus_baselines(self) -> list[BaselineComparison]:
        """Each FORA baseline against the front's best schedule at no more MACs, chosen by the search's own
        loss and judged on the held-out images when they are scored."""
        state = self.search.state
        front = [state.records[point.digest] for point in state.archive.front()]
        held_out = self.held_out.records
        guarded = self.prepared.config.guard in ("both", "paired")
        return compare_with_baselines(
            front, self.baselines, state.search_loss, held_out, self.search.significantly_better if guarded else None
        )

    def write_outputs(self, index: int) -> None:
        out = self.prepared.out
        entries = self.front_entries(index)
        write_front(out, entries)
        write_tables(out, entries, self.full_macs)
        write_atomic(
            out / "vs_fora.md",
            baseline_table(self.versus_baselines(), self.full_macs, self.prepared.splits),
        )
        write_history(out, self.reports)
        hv = self.reports[-1].hypervolume if self.reports else 0.0
        pareto_plot(
            out / "pareto.png",
            list(self.search.state.records.values()),
            entries,
            self.baselines,
            self.held_out.records,
            self.full_macs,
            f"{self.prepared.run}: generation {index + 1}, hypervolume {hv:.4f}",
            self.search.state.search_loss,
        )


def _genome(record: EvaluationRecord) -> np.ndarray:
    return genome_bits(record.genome)


def _describe_images(settings: EvaluationSettings) -> str:
    seeds = settings.images_per_prompt
    return f"{len(settings.prompts)} prompts × {seeds} seed{'s' if seeds > 1 else ''} from {settings.seed}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_search(prepared: PreparedSearch, console: Console | None = None) -> SearchRun:
    """Build the evaluator, open the run and run its generations; the finished `SearchRun` holds the reports.

    What each candidate costs is said before anything is loaded, in yellow when it is large.
    """
    console = console or Console()
    for note in prepared.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    settings = prepared.settings
    style = "yellow" if settings.num_images > LARGE_IMAGES_PER_CANDIDATE else "default"
    held_out = prepared.splits.held_out
    console.print(
        f"[{style}]{settings.num_images:,} images per candidate ({len(settings.prompts)} prompts × "
        f"{settings.images_per_prompt} seeds)[/{style}]; held out: {held_out.num_images:,} "
        f"({len(held_out.prompts)} × {held_out.images_per_prompt})",
        soft_wrap=True,
        highlight=False,
    )
    search_run = SearchRun(prepared, console)
    try:
        search_run.run()
    finally:
        search_run.pool.close()
    return search_run


@dataclass(frozen=True)
class BudgetRun:
    """A budget search's outcome, the held-out records of what it found and of where it started, how many
    masks it generated images for now on the calibration prompts (raced ones included; the rest came from the
    memo) and how many of its moves the race dropped, and the images it generated on each split."""

    outcome: BudgetOutcome
    held_out: dict[str, EvaluationRecord]
    evaluated: int
    dropped: int
    calibration_images: int
    held_out_images: int
    latency: LatencyCheck | None = None

    @property
    def images(self) -> int:
        """Images generated now, on both splits (and the timed runs of a latency budget)."""
        return self.calibration_images + self.held_out_images


@dataclass(frozen=True)
class LatencyCheck:
    """What a `--budget-latency` search kept to, and what it found: the latency model fitted on this device,
    the uncached run's measured seconds per image, and the found schedule's latency as a fraction of it, as
    the model predicts it and as measured (None when it could not be timed)."""

    model: LatencyModel
    uncached_s: float
    predicted: float
    measured: float | None


def latency_split(settings: EvaluationSettings, pool: EvaluationPool) -> EvaluationSettings:
    """The calibration prompts and seeds with a latency cost, on the pool's device: where `--budget-latency`
    times its runs, whole (a latency cost shares no prefix), and stored under a key of its own per device."""
    return replace(settings, cost="latency", timed_on=pool.device_label())


def fit_latency(template: CacheSchedule, timing: SplitScorer) -> tuple[LatencyModel, float]:
    """The latency model from the probe schedules timed on `timing` (a latency-cost split), and the uncached
    run's seconds per image."""
    probes = latency_probes(template)
    records = timing.scores({schedule.digest(): schedule for schedule in probes.values()})
    seconds = {name: records[s.digest()].latency_s for name, s in probes.items() if s.digest() in records}
    timed = {name: value for name, value in seconds.items() if value is not None}
    if len(timed) < len(probes):
        missing = ", ".join(sorted(set(probes) - set(timed)))
        raise SearchOptionError(f"--budget-latency: could not time the probe schedules {missing}; see the log above")
    return LatencyModel.fit(template, timed), timed[UNCACHED]


def search_at_budget(
    prepared: PreparedSearch,
    budget: float,
    pool: EvaluationPool,
    store: Store,
    plan: BudgetPlan,
    on_move: Callable[[int, float], None] | None = None,
    by_latency: bool = False,
    moves: Moves | None = None,
) -> BudgetRun:
    """The local search at `budget` from the best FORA-N (N ≤ 10) or front member of an earlier search on the
    same calibration split within it, and the held-out records of the result and its start. The budget is a
    fraction of the uncached MACs, or, `by_latency`, of the uncached latency that a model fitted on timed
    runs of this device predicts; the found schedule is then timed too."""
    settings, spec = prepared.settings, prepared.spec
    template = run_template(spec, settings)
    full = schedule_macs(template, spec, settings)
    timing = SplitScorer(latency_split(settings, pool), store, pool) if by_latency else None
    model, uncached_s = fit_latency(template, timing) if timing is not None else (None, 0.0)

    def cost(schedule: CacheSchedule) -> float:
        if model is not None:
            return model.seconds(schedule) / model.seconds(template)
        return schedule_macs(schedule, spec, settings) / full

    calibration = SplitScorer(settings, store, pool)
    split = prompt_race(settings, plan.race)
    race = IncumbentRace(split, calibration) if split else None
    measure = "latency (predicted)" if model is not None else "MACs"
    scoring = Scoring(calibration.scores, race)
    search = BudgetSearch(template, budget, scoring, cost, prepared.config.seed, plan, moves, measure)
    starts = [fora(template.groups, template.num_steps, n) for n in range(2, min(11, template.num_steps))]
    outcome = search.run(starts + earlier_fronts(store, template, settings.key()), on_move)
    held_out = SplitScorer(prepared.splits.held_out, store, pool)
    records = held_out.scores({s.digest(): s for s in (outcome.schedule, outcome.start)})
    evaluated = calibration.evaluated + (race.race.evaluated if race else 0)
    calibration_images = calibration.evaluated * settings.num_images + (race.images() if race else 0)
    held_out_images = held_out.evaluated * held_out.settings.num_images
    check = None
    if timing is not None and model is not None:
        found = timing.scores({outcome.schedule.digest(): outcome.schedule}).get(outcome.schedule.digest())
        measured = found.latency_s / uncached_s if found is not None and found.latency_s is not None else None
        check = LatencyCheck(model, uncached_s, cost(outcome.schedule), measured)
        calibration_images += timing.evaluated * timing.settings.num_images
    dropped = race.dropped if race else 0
    return BudgetRun(outcome, records, evaluated, dropped, calibration_images, held_out_images, check)


def _latency_line(check: LatencyCheck) -> str:
    measured = "could not be timed" if check.measured is None else f"measured {check.measured:.1%}"
    return (
        f"latency: predicted {check.predicted:.1%} of the uncached {check.uncached_s:.3g} s per image, {measured} "
        "on this device"
    )


def earlier_fronts(store: Store, template: CacheSchedule, eval_key: str) -> list[CacheSchedule]:
    """The last archived front of every search on this calibration split: free starting points, already
    scored."""
    digests = {d for run in store.list_runs() if run.eval_key == eval_key for d in _last_archive(store, run.name)}
    records = store.evaluations_for(eval_key, sorted(digests))
    return [template.with_genome(_genome(r), name=f"front-{r.digest[:8]}") for r in records if r.genome]


def _last_archive(store: Store, run: str) -> tuple[str, ...]:
    generations = store.generations(run)
    return generations[-1].archive if generations else ()


def run_budget_search(
    prepared: PreparedSearch,
    budget: float,
    plan: BudgetPlan,
    console: Console | None = None,
    by_latency: bool = False,
) -> str:
    """The best schedule at or under `budget` (a fraction of the uncached MACs, or `by_latency` of the
    uncached latency on this device), by local search on the calibration images, judged on the held-out
    images against the best FORA within the budget; writes the schedule to OUT/RUN/budget-PERCENT.json (or
    budget-latency-PERCENT.json) and returns the summary."""
    console = console or Console()
    config, settings = prepared.config, prepared.settings
    pool = make_pool(
        prepared.spec, config.device, workers=config.workers, address=config.ray_address,
        gpus_per_worker=config.gpus_per_worker, prefix_mib=config.prefix_memory,
    )  # fmt: skip
    try:
        split = prompt_race(settings, plan.race)
        timed = (latency_split(settings, pool),) if by_latency else ()
        extra = [*((split.race, split.rest) if split else ()), *timed]
        pool.prepare(settings, [*extra, prepared.splits.held_out])
        with Store(config.db) as store, console.status("budget search") as status:
            run = search_at_budget(
                prepared, budget, pool, store, plan,
                on_move=lambda moves, loss: status.update(f"{moves} moves, best loss {loss:.4g}"),
                by_latency=by_latency,
            )  # fmt: skip
    finally:
        pool.close()
    outcome, records = run.outcome, run.held_out
    measure = "latency" if by_latency else "MACs"
    provenance = {"method": "budget search", "run": prepared.run, "budget": budget, "budget_of": measure}
    kind = "budget-latency" if by_latency else "budget"
    named = outcome.schedule.with_metadata(name=f"{kind}-{budget:.0%}", provenance=provenance)
    path = save_schedule(named, prepared.out / f"{kind}-{round(budget * 100)}.json")
    start, found = outcome.start_record, outcome.record
    dropped = f" ({run.dropped} dropped after their race)" if run.dropped else ""
    lines = [
        f"{measure} budget {budget:.0%}: {outcome.moves} moves from {outcome.start.name} ({start.cost:.1%} MACs, "
        f"search loss {start.quality_loss:.4g}) to {found.cost:.1%} MACs, search loss {found.quality_loss:.4g}",
        f"{run.evaluated} new evaluations{dropped}, {run.images:,} images generated; wrote {path}",
    ]
    if run.latency is not None:
        lines.append(_latency_line(run.latency))
    ours, theirs = records.get(outcome.schedule.digest()), records.get(outcome.start.digest())
    if ours is not None and theirs is not None:
        lead = paired_difference(ours.scores["prompt_scores"], theirs.scores["prompt_scores"])
        verdict = {1: "better", 0: "a tie", -1: "worse"}[lead.verdict]
        lines.append(
            f"held out: loss {ours.quality_loss:.4g} against {outcome.start.name}'s {theirs.quality_loss:.4g}, "
            f"{verdict} (lead {lead.mean:.4g}, 95 % interval [{lead.low:.4g}, {lead.high:.4g}])"
        )
    return "\n".join(lines)
