"""BudCache's search as released (`search/budcache.py`), the published baseline of `--budget`: on a hand-made
objective it keeps the step count and the forced prefix, ends where no relocation improves, and is
deterministic; on digits it runs through the memo like `--budget` (a re-run pays nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecad_search.models import block_groups, get_model
from ecad_search.pool import LocalPool
from ecad_search.schedule import CacheSchedule
from ecad_search.search.budcache import BudCachePlan, BudCacheSearch
from ecad_search.search.budget import BudgetPlan
from ecad_search.search.config import SearchConfig
from ecad_search.search.runner import BudgetRun, prepare, search_at_budget
from ecad_search.store import EvaluationRecord, Store

STEPS = 20


def template() -> CacheSchedule:
    return CacheSchedule.all_compute(block_groups(get_model("digits")), STEPS)


def fraction(schedule: CacheSchedule) -> float:
    return float(schedule.genome().mean())


def computed_steps(search: BudCacheSearch, schedule: CacheSchedule) -> np.ndarray:
    """The steps a whole-step schedule computes, step 0 included."""
    rows = schedule.genome().reshape(STEPS - 1, search.components)
    assert (rows == rows[:, :1]).all(), "every component of a step computes or none does"
    return np.concatenate([[True], rows[:, 0]])


class StepValues:
    """A loss that is minus the summed value of the computed steps, recording every mask it scores: the best
    mask computes the most valuable steps."""

    def __init__(self, seed: int) -> None:
        self.values = np.random.default_rng(seed).normal(size=STEPS)
        self.scored: list[CacheSchedule] = []

    def loss(self, schedule: CacheSchedule) -> float:
        rows = schedule.genome().reshape(STEPS - 1, -1)[:, 0]
        return float(-self.values[1:][rows].sum())

    def __call__(self, schedules: dict[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        self.scored.extend(schedules.values())
        return {
            digest: EvaluationRecord(digest, "0", self.loss(s), fraction(s), 0.0, None, {}, 0.0)
            for digest, s in schedules.items()
        }


def test_every_mask_keeps_the_step_count_and_the_forced_prefix() -> None:
    objective = StepValues(seed=3)
    search = BudCacheSearch(template(), 0.5, objective, fraction, seed=0)
    outcome = search.run()
    assert (search.nfe, search.prefix) == (10, 2), "10 of 20 whole steps fit 50 %; the first 10 // 4 always compute"
    for schedule in objective.scored:
        steps = computed_steps(search, schedule)
        assert steps.sum() == 10 and steps[:2].all()
    assert fraction(outcome.schedule) <= 0.5
    assert outcome.record.quality_loss <= outcome.start_record.quality_loss
    assert len(objective.scored) == outcome.evaluations > BudCachePlan().anneal_moves


def test_the_climb_ends_where_no_near_relocation_improves_and_the_seed_fixes_the_result() -> None:
    objective = StepValues(seed=5)
    search = BudCacheSearch(template(), 0.35, objective, fraction, seed=1)
    outcome = search.run()
    end = computed_steps(search, outcome.schedule)
    near = [mask for mask in search.neighbourhood(end) if np.ptp(np.flatnonzero(mask ^ end)) <= 3]
    assert near, "the end has neighbours within ±3 steps"
    assert all(objective.loss(search.schedule(mask)) >= outcome.record.quality_loss for mask in near)
    again = BudCacheSearch(template(), 0.35, StepValues(seed=5), fraction, seed=1).run()
    assert again.schedule.digest() == outcome.schedule.digest() and again.moves == outcome.moves


def test_a_budget_below_step_zero_is_a_one_line_error() -> None:
    def with_step_zero(schedule: CacheSchedule) -> float:
        return (1 + fraction(schedule) * (STEPS - 1)) / STEPS

    with pytest.raises(ValueError, match=r"at most 1% of the uncached MACs \(step 0 alone costs 5%\); give a larger"):
        BudCacheSearch(template(), 0.01, StepValues(seed=0), with_step_zero)


def test_budcache_on_digits_goes_through_the_memo(tmp_path: Path) -> None:
    config = SearchConfig(
        model="digits", generations=1, metric="fidelity", steps=10, images_per_prompt=1,
        held_out_images_per_prompt=1, db=f"sqlite:///{tmp_path / 'b.db'}", out=str(tmp_path / "out"), run="b",
    )  # fmt: skip
    prepared = prepare(config)
    plan = BudCachePlan(anneal_moves=4, climb_rounds=0)

    def budget_search() -> BudgetRun:
        pool = LocalPool(prepared.spec, prepared.config.device)
        try:
            with Store(config.db) as store:
                return search_at_budget(prepared, 0.5, pool, store, BudgetPlan(), budcache=plan)
        finally:
            pool.close()

    first = budget_search()
    assert first.outcome.schedule.name == "budcache" and first.outcome.record.cost <= 0.5
    with Store(config.db) as store:
        stored = store.count_evaluations(prepared.settings.key())
    assert first.calibration_images == stored * len(prepared.settings.prompts) > 0
    assert set(first.held_out) == {first.outcome.schedule.digest(), first.outcome.start.digest()}
    again = budget_search()
    assert again.images == 0 and again.outcome.schedule.digest() == first.outcome.schedule.digest()
