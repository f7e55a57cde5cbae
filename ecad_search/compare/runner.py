"""`ecad-search compare`: learned schedules, FORA and every online policy on the same held-out images, at the
same cost budgets, in one command.

The held-out images are the search's own held-out split (other seeds, and other prompts where the prompt set
ships a companion): for a request that names a run, exactly that run's, so its learned schedules are judged on
images they were not tuned on. Every evaluation goes through the evaluation memo of the database (keyed by the
candidate, mask or policy, and the split), so an interrupted compare resumes and a second one with more
methods pays only for the new ones. Wall time is measured last, for each method's best point at each budget
and the uncached run, interleaved so that a noisy machine slows every method alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..app.requests import CompareRequest
from ..evaluation import EvaluationSettings, Evaluator
from ..fewer_steps import FewerSteps
from ..formats.policy import policy_digest
from ..models import ModelSpec
from ..policies import PolicyConfig, policy_sweep
from ..pool import LocalPool
from ..search.splits import SplitScorer
from ..store import EvaluationRecord, Store
from .budgets import BudgetResult, Point, at_budgets, hypervolume, reference_point
from .methods import OUR_METHODS, Setting, fewer_steps_settings, fora_settings, grid_settings, study_settings

DEFAULT_BUDGETS = (0.5, 0.35, 0.25, 0.2)
# Methods with no knobs: a fixed list of settings each.
FIXED_METHODS = ("fora", "fewer-steps")
# Images each method is timed on (the held-out split's first prompts), and how many interleaved rounds.
TIMING_PROMPTS = 2


@dataclass(frozen=True)
class PreparedCompare:
    """Checked options: the model, the held-out split, the methods and the learned schedules."""

    config: CompareRequest
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


class Comparison:
    """Scores every method's settings on the held-out split through the memo, then times the best ones."""

    def __init__(self, prepared: PreparedCompare, on_scored: Callable[[Setting, EvaluationRecord], None]) -> None:
        self.prepared = prepared
        self.on_scored = on_scored
        self.store = Store(prepared.config.db)
        self.pool = LocalPool(prepared.spec, prepared.config.device)
        self.scorer = SplitScorer(prepared.held_out, self.store, self.pool, needs_families=True)
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
            if method in OUR_METHODS:
                total += sum(s.method == method for s in self.prepared.learned)
            elif method in FIXED_METHODS:
                total += len(self.fixed_settings(method))
            else:
                total += c.grid if len(policy_sweep(method)) == 1 else c.trials
        return total

    def fixed_settings(self, method: str) -> list[Setting]:
        """The settings of a method that has no knobs to sweep: FORA-N, or k steps."""
        steps = self.prepared.held_out.steps
        if method == "fora":
            return fora_settings(self.evaluator.template.groups, steps)
        return fewer_steps_settings(steps)

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
            if method in OUR_METHODS:
                settings: Any = [s for s in self.prepared.learned if s.method == method]
            elif method in FIXED_METHODS:
                settings = self.fixed_settings(method)
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
                elif isinstance(candidate, FewerSteps):
                    _, took, _ = evaluator.generate_at_steps(candidate)
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
