"""A whole search run as the command line starts it: check the options, open the store, load the evaluator,
run the generations with a progress display, and write the outputs after each generation.

Every option is checked before anything is written, so a bad option leaves the database and the output
folder untouched.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import __version__
from ..evaluation import COSTS, EvaluationSettings, Evaluator
from ..files import write_atomic
from ..generation import resolve_device
from ..metrics import get_metric
from ..models import ModelSpec, get_model
from ..prompts import default_prompt_file, load_prompts
from ..store import EvaluationRecord, Store
from .driver import GenerationReport, Search
from .presets import Preset, get_preset
from .report import (
    BaselineComparison,
    FrontEntry,
    baseline_table,
    compare_with_baselines,
    describe,
    pareto_plot,
    write_front,
    write_history,
    write_tables,
)
from .seeding import fora_reference


@dataclass(frozen=True)
class SearchConfig:
    """Everything a run is; all but `generations`, `db`, `out` and `device` identify the run in the database."""

    model: str
    generations: int
    metric: str | None = None
    preset: str = "default"
    population: int | None = None
    prompts: str | None = None
    images_per_prompt: int = 1
    steps: int | None = None
    resolution: int | None = None
    guidance: float | None = None
    cost: str = "macs"
    seed: int = 0
    batch_size: int = 0
    db: str = "sqlite:///ecad-search.db"
    run: str | None = None
    out: str = "runs"
    device: str = "auto"

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("generations", "db", "out", "device")}


class SearchOptionError(ValueError):
    """An option that cannot work; reported before anything is written."""


@dataclass(frozen=True)
class PreparedSearch:
    """Checked options: the model, the evaluation settings and the names derived from them."""

    config: SearchConfig
    spec: ModelSpec
    settings: EvaluationSettings
    population: int
    run: str
    out: Path


def default_metric(spec: ModelSpec) -> str:
    """ECAD's ImageReward for real models; fidelity for digits, whose classifier reward caching cannot move.

    The digit a sample shows is fixed by the class conditioning before any step can be cached (the first
    x₀ estimate already reads as the prompted digit), and reuse pulls samples towards their class mean, which
    a classifier reads more confidently, not less. So a `reward` front is flat while SSIM to the uncached
    image falls with every cached step (measured in tests/test_digits_caching.py and the README).
    """
    return "fidelity" if spec.family == "digits" else "image-reward"


def prepare(config: SearchConfig) -> PreparedSearch:
    """Validate every option and derive the run's settings; raises one-line errors, writes nothing."""
    if config.generations < 1:
        raise SearchOptionError(f"--generations must be at least 1, got {config.generations}")
    if config.images_per_prompt < 1:
        raise SearchOptionError(f"--images-per-prompt must be at least 1, got {config.images_per_prompt}")
    if config.cost not in COSTS:
        raise SearchOptionError(f"unknown cost '{config.cost}': use one of {', '.join(COSTS)}")
    preset = get_preset(config.preset)
    population = config.population or preset.population
    if population < 4:
        raise SearchOptionError(f"--population must be at least 4, got {population}")
    spec = get_model(config.model)
    metric = config.metric or default_metric(spec)
    get_metric(metric)
    prompts = load_prompts(config.prompts or default_prompt_file(spec.family))
    Store.validate_url(config.db)
    config = replace(config, device=resolve_device(config.device))
    settings = EvaluationSettings(
        model=spec.name,
        metric=metric,
        prompts=prompts,
        images_per_prompt=config.images_per_prompt,
        steps=config.steps or spec.default_steps,
        guidance_scale=spec.guidance_scale if config.guidance is None else config.guidance,
        resolution=config.resolution or spec.resolution,
        seed=config.seed,
        cost=config.cost,
        batch_size=config.batch_size,
    )
    run = config.run or _run_name(config, metric)
    return PreparedSearch(config, spec, settings, population, run, Path(config.out) / _safe(run))


def _run_name(config: SearchConfig, metric: str) -> str:
    digest = hashlib.sha256(repr(sorted(config.identity().items())).encode()).hexdigest()[:8]
    return f"{Path(config.model).name}-{metric}-{config.preset}-s{config.seed}-{digest}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class SearchRun:
    """Runs a prepared search and keeps its outputs current.

    The evaluator (pipeline, metric weights) is built before the database is opened, so a model or metric
    that cannot load leaves no trace in the database.
    """

    def __init__(
        self,
        prepared: PreparedSearch,
        console: Console | None = None,
        evaluator: Evaluator | None = None,
        preset: Preset | None = None,
    ):
        self.prepared = prepared
        self.console = console or Console()
        config = prepared.config
        self.evaluator = evaluator or Evaluator(prepared.spec, prepared.settings, device=config.device)
        self.store = Store(config.db)
        self.store.start_run(
            prepared.run,
            prepared.config.identity(),
            prepared.settings.key(),
            prepared.spec.name,
            prepared.settings.metric,
            config.seed,
            __version__,
        )
        self.search = Search(
            run=prepared.run,
            evaluator=self.evaluator,
            store=self.store,
            preset=preset or get_preset(config.preset),
            population=prepared.population,
            seed=config.seed,
        )
        self.history: list[tuple[int, float, int, int, int]] = []
        self.baselines = self._baselines()

    def _baselines(self) -> dict[str, EvaluationRecord]:
        """FORA every-N up to N=6, evaluated once (memoised like any candidate) for the plot."""
        baselines = {}
        for schedule in fora_reference(self.search.template):
            digest = schedule.digest()
            known = self.store.lookup(self.search.eval_key, [digest])
            baselines[schedule.name] = known[digest] if known else self.search.evaluate_and_record(digest, schedule)
        return baselines

    def run(self) -> list[GenerationReport]:
        generations = self.prepared.config.generations
        reports: list[GenerationReport] = []
        self.prepared.out.mkdir(parents=True, exist_ok=True)
        try:
            with self._progress() as progress:
                gens = progress.add_task("generations", total=generations, status="")
                cands = progress.add_task("candidates", total=self.prepared.population, status="")

                def on_candidate(digest: str, position: int, total: int) -> None:
                    progress.update(cands, completed=position + 1, total=total)

                for index in range(generations):
                    report = self.search.step(index, on_candidate)
                    reports.append(report)
                    self.history.append(
                        (index, report.hypervolume, report.evaluated, report.memo_hits, report.front_size)
                    )
                    if not report.replayed or index == generations - 1:
                        self.write_outputs(index)
                    progress.update(gens, advance=1, status=self._status(report))
                    progress.update(cands, completed=0)
        except KeyboardInterrupt:
            self.store.set_status(self.prepared.run, "interrupted")
            raise
        except Exception:
            self.store.set_status(self.prepared.run, "failed")
            raise
        self.store.set_status(self.prepared.run, "finished")
        return reports

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        )

    def _status(self, report: GenerationReport) -> str:
        """The current best trade-offs: the best quality, and the cheapest schedule within 0.02 of it."""
        front = self.search.state.archive.front()
        best = min(p.objectives[0] for p in front)
        cheapest = min((p for p in front if p.objectives[0] <= best + 0.02), key=lambda p: p.objectives[1])
        return (
            f"HV {report.hypervolume:.4f} | new {report.evaluated}, cached {report.memo_hits} | front {len(front)} | "
            f"best loss {best:.3f}; within +0.02: {cheapest.objectives[1]:.0%} cost (loss {cheapest.objectives[0]:.3f})"
        )

    def front_entries(self, index: int) -> list[FrontEntry]:
        records = self.search.state.records
        entries = []
        for rank, point in enumerate(self.search.state.archive.front()):
            record = records[point.digest]
            schedule = describe(
                self.search.schedule(point.genome),
                record,
                self.prepared,
                generation=index,
                rank=rank,
                full_macs=self.evaluator.full_macs,
            )
            name = f"rank{rank:02d}-loss{record.quality_loss:.4f}-macs{record.cost:.3f}.json"
            entries.append(FrontEntry(schedule, record, name))
        return entries

    def versus_baselines(self) -> list[BaselineComparison]:
        """Each FORA baseline against the archive's best schedule at no more MACs."""
        records = self.search.state.records
        front = [records[point.digest] for point in self.search.state.archive.front()]
        return compare_with_baselines(front, self.baselines)

    def write_outputs(self, index: int) -> None:
        out = self.prepared.out
        entries = self.front_entries(index)
        write_front(out, entries)
        write_tables(out, entries, self.evaluator.full_macs)
        write_atomic(out / "vs_fora.md", baseline_table(self.versus_baselines(), self.evaluator.full_macs))
        write_history(out, self.history)
        hv = self.history[-1][1] if self.history else 0.0
        pareto_plot(
            out / "pareto.png",
            list(self.search.state.records.values()),
            [e.record for e in entries],
            self.baselines,
            self.evaluator.full_macs,
            f"{self.prepared.run}: generation {index + 1}, hypervolume {hv:.4f}",
        )


def run_search(config: SearchConfig, console: Console | None = None) -> tuple[SearchRun, list[GenerationReport]]:
    prepared = prepare(config)
    search_run = SearchRun(prepared, console)
    return search_run, search_run.run()
