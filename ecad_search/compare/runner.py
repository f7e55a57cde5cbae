"""`ecad-search compare`: learned schedules, FORA and every online policy on the same held-out images, at the
same cost budgets, in one command.

The held-out images are the search's own held-out split (other seeds, and other prompts where the prompt set
ships a companion): for `--run RUN` exactly that run's, so its learned schedules are judged on images they
were not tuned on. Every evaluation goes through the evaluation memo of the database (keyed by the candidate,
mask or policy, and the split), so an interrupted compare resumes and a second one with more methods pays only
for the new ones. Wall time is measured last, for each method's best point at each budget and the uncached
run, interleaved so that a noisy machine slows every method alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..evaluation import EvaluationSettings, Evaluator, run_template
from ..formats import load_schedule
from ..formats.policy import policy_digest
from ..models import ModelSpec
from ..pool import LocalPool, genome_bits
from ..prompts import load_prompts
from ..runtime.policy import PolicyConfig, policy_sweep
from ..schedule import CacheSchedule
from ..search.config import SearchConfig, SearchOptionError
from ..search.runner import check_writable_folder, prepare
from ..search.splits import SplitScorer
from ..store import EvaluationRecord, Store
from .budgets import BudgetResult, Point, at_budgets, hypervolume, reference_point
from .methods import METHODS, Setting, fora_settings, grid_settings, learned_settings, study_settings

DEFAULT_BUDGETS = (0.5, 0.35, 0.25, 0.2)
# Images each method is timed on (the held-out split's first prompts), and how many interleaved rounds.
TIMING_PROMPTS = 2


@dataclass(frozen=True)
class CompareConfig:
    """Everything a compare is. `methods` None means all; `run` names a search whose front and held-out split
    are used; `prompts` replaces the held-out prompts."""

    model: str
    run: str | None = None
    metric: str | None = None
    schedules: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None
    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    db: str = "sqlite:///ecad-search.db"
    out: str = "compare"
    prompts: str | None = None
    images_per_prompt: int | None = None
    grid: int = 6
    trials: int = 12
    timing_repeats: int = 3
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class PreparedCompare:
    """Checked options: the model, the held-out split, the methods and the learned schedules."""

    config: CompareConfig
    spec: ModelSpec
    held_out: EvaluationSettings
    methods: tuple[str, ...]
    learned: tuple[Setting, ...]
    out: Path


@dataclass
class CompareResult:
    prepared: PreparedCompare
    points: dict[str, list[Point]]
    uncached: Point
    budgets: list[BudgetResult]
    hypervolumes: dict[str, float]
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    evaluated: int = 0


def prepare_compare(config: CompareConfig) -> PreparedCompare:
    """Validate every option and find the held-out split and the learned schedules; one-line errors, nothing
    written."""
    methods = config.methods or METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SearchOptionError(f"unknown method '{unknown[0]}': use some of {', '.join(METHODS)}")
    bad = [b for b in config.budgets if not 0 < b <= 1]
    if bad:
        raise SearchOptionError(f"budget {bad[0]} is not a fraction of the uncached MACs: give values in (0, 1]")
    for option, value, low in (("--grid", config.grid, 2), ("--trials", config.trials, 1)):
        if value < low:
            raise SearchOptionError(f"{option} {value} is too small: give at least {low}")
    search = _search_config(config)
    prepared = prepare(search)
    config = replace(config, device=prepared.config.device)
    held_out = replace(prepared.splits.held_out, reference_figures=True)
    if config.prompts:
        held_out = replace(held_out, prompts=load_prompts(config.prompts))
    if config.images_per_prompt is not None:
        held_out = replace(held_out, images_per_prompt=config.images_per_prompt)
    template = run_template(prepared.spec, held_out)
    files = [(Path(p), _fitting(load_schedule(p), template, p)) for p in config.schedules]
    front = _front(config, template) if config.run else []
    if "learned" in methods and not (front or files) and config.methods is not None:
        raise SearchOptionError("the learned method needs --run RUN or --schedules FILES")
    out = Path(config.out) / f"compare-{_safe(prepared.spec.name)}-{held_out.key()[:8]}"
    check_writable_folder(out, "--out", config.db)
    return PreparedCompare(config, prepared.spec, held_out, tuple(methods), tuple(learned_settings(front, files)), out)


def _search_config(config: CompareConfig) -> SearchConfig:
    """The search whose held-out split this compare uses: the named run's own options, else the model's
    defaults."""
    if config.run is None:
        return SearchConfig(
            model=config.model,
            generations=1,
            metric=config.metric,
            db=config.db,
            seed=config.seed,
            device=config.device,
        )
    with Store(config.db, create=False) as store:
        info = store.get_run(config.run)
    if info is None:
        raise SearchOptionError(f"no run named '{config.run}' in {config.db}: `ecad-search runs` lists them")
    if config.metric is not None and config.metric != info.config.get("metric"):
        raise SearchOptionError(f"run '{config.run}' was scored with another metric: leave out --metric")
    return SearchConfig(**{**info.config, "generations": 1, "db": config.db, "device": config.device})


def _front(config: CompareConfig, template: CacheSchedule) -> list[CacheSchedule]:
    """The named run's final front, as schedules (from its last recorded generation's archive)."""
    with Store(config.db, create=False) as store:
        info = store.get_run(str(config.run))
        generations = store.generations(str(config.run))
        if info is None or not generations:
            raise SearchOptionError(f"run '{config.run}' has no finished generation yet: let it run, then compare")
        records = store.evaluations_for(info.eval_key, list(generations[-1].archive))
    return [template.with_genome(genome_bits(record.genome)) for record in records if record.genome]


def _fitting(schedule: CacheSchedule, template: CacheSchedule, path: str) -> CacheSchedule:
    if schedule.groups != template.groups or schedule.num_steps != template.num_steps:
        raise SearchOptionError(
            f"{path} is a {schedule.num_steps}-step schedule for other blocks; compare needs "
            f"{template.num_steps} steps on this model's blocks"
        )
    return template.with_metadata(masks=dict(schedule.masks), name=schedule.name or Path(path).stem)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name or name)


class Comparison:
    """Scores every method's settings on the held-out split through the memo, then times the best ones."""

    def __init__(self, prepared: PreparedCompare, on_scored: Callable[[Setting, EvaluationRecord], None]) -> None:
        self.prepared = prepared
        self.on_scored = on_scored
        self.store = Store(prepared.config.db)
        self.pool = LocalPool(prepared.spec, prepared.config.device)
        self.scorer = SplitScorer(prepared.held_out, self.store, self.pool)
        self.points: dict[str, list[Point]] = {}
        self.candidates: dict[str, Setting] = {}

    @property
    def evaluator(self) -> Evaluator:
        return self.pool.evaluator(self.prepared.held_out)

    def close(self) -> None:
        self.pool.close()
        self.store.close()

    def planned(self) -> int:
        """How many settings the methods will score (for the progress bar)."""
        c, total = self.prepared.config, 1
        for method in self.prepared.methods:
            if method == "learned":
                total += len(self.prepared.learned)
            elif method == "fora":
                total += len(fora_settings(self.evaluator.template.groups, self.prepared.held_out.steps))
            else:
                total += c.grid if len(policy_sweep(method)) == 1 else c.trials
        return total

    def score(self, setting: Setting) -> tuple[float, float]:
        """Score one setting (calibrating a policy first where it needs a table); its (cost, loss)."""
        candidate = setting.candidate
        if isinstance(candidate, PolicyConfig):
            candidate = self.evaluator.calibrated(candidate)
            setting = replace(setting, candidate=candidate)
            digest = policy_digest(candidate)
        else:
            digest = candidate.digest()
        record = self.scorer.scores({digest: candidate}).get(digest)
        if record is None:
            return 1.0, float("inf")
        self.candidates[digest] = setting
        point = Point(
            setting.method,
            setting.label,
            digest,
            record.cost,
            record.quality_loss,
            tuple(record.scores.get("prompt_scores", ())),
            {k: v for k, v in record.scores.items() if k != "prompt_scores"} | {"macs": record.macs},
        )
        self.points.setdefault(setting.method, []).append(point)
        self.on_scored(setting, record)
        return record.cost, record.quality_loss

    def run_methods(self) -> Point:
        """Score the uncached run and every method; returns the uncached point."""
        template = self.evaluator.template
        self.score(Setting("uncached", "uncached", template))
        uncached = self.points.pop("uncached")[0]
        config = self.prepared.config
        for method in self.prepared.methods:
            if method == "learned":
                settings: Any = self.prepared.learned
            elif method == "fora":
                settings = fora_settings(template.groups, self.prepared.held_out.steps)
            elif len(policy_sweep(method)) == 1:
                settings = grid_settings(method, config.grid)
            else:
                storage = self.prepared.out / "optuna.db"
                storage.parent.mkdir(parents=True, exist_ok=True)
                name = f"{method}-{self.prepared.held_out.key()[:12]}-s{config.seed}"
                for _ in study_settings(method, config.trials, storage, name, config.seed, self.score):
                    pass
                continue
            for setting in settings:
                self.score(setting)
        return uncached

    def time_best(self, results: list[BudgetResult], uncached: Point) -> dict[str, float]:
        """Seconds per image of the uncached run and of each method's best point at each budget, on the held-out
        split's first prompts, in interleaved rounds (median)."""
        held_out = self.prepared.held_out
        timing = replace(held_out, prompts=held_out.prompts[:TIMING_PROMPTS])
        evaluator = self.pool.evaluator(timing)
        chosen = {uncached.digest: uncached}
        for result in results:
            chosen.update({p.digest: p for p in result.best.values() if p is not None})
        candidates = {digest: self.candidates[digest].candidate for digest in chosen if digest in self.candidates}
        candidates[uncached.digest] = evaluator.template
        seconds: dict[str, list[float]] = {digest: [] for digest in candidates}
        for _ in range(self.prepared.config.timing_repeats):
            for digest, candidate in candidates.items():
                if isinstance(candidate, PolicyConfig):
                    _, took, _, _ = evaluator.generate_with_policy(candidate)
                else:
                    _, took = evaluator.generate(candidate)
                seconds[digest].append(took / timing.num_images)
        return {digest: statistics.median(values) for digest, values in seconds.items()}


def run_compare(
    prepared: PreparedCompare,
    on_scored: Callable[[Setting, EvaluationRecord], None] = lambda *_: None,
    on_planned: Callable[[int], None] = lambda _: None,
) -> CompareResult:
    """Score every method, find the best of each at each budget, time those, and return it all (the report is
    written by `report.write_report`)."""
    comparison = Comparison(prepared, on_scored)
    try:
        on_planned(comparison.planned())
        uncached = comparison.run_methods()
        points = comparison.points
        budgets = at_budgets(points, prepared.config.budgets)
        reference = reference_point(points)
        hypervolumes = {method: hypervolume(method_points, reference) for method, method_points in points.items()}
        seconds = comparison.time_best(budgets, uncached)
        return CompareResult(prepared, points, uncached, budgets, hypervolumes, seconds, comparison.scorer.evaluated)
    finally:
        comparison.close()
