"""BudCache's schedule search as its authors released it (ICML 2026; the FLUX search script), on whole steps:
the published baseline that `--budget` is measured against (`scripts/bench_budget.py --published`).

A mask is the set of steps that compute, at a fixed count (the NFE: here the most whole steps that fit the
budget); the first max(1, NFE // 4) steps always compute. From a random mask, simulated annealing makes
`anneal_moves` moves: each relocates one computed step onto a cached one, within `radius` steps with
probability `near`, and a share `double_moves` of them relocate two. Steepest-descent hill climbing then
starts from the annealing's final mask: each round scores the whole neighbourhood (every relocation of each
computed step within `radius`, plus `far_jumps` random farther ones per computed step) and moves to the best
improving neighbour, until none improves or after `climb_rounds` rounds. Masks are scored through the
evaluation memo, so a repeated mask costs nothing, as in the release.

Two things differ from the release, both in the baseline's favour: it scores with the search's own metric
(the release uses the MSE of final latents to the uncached run on one prompt and seed, which on digits does
not rank schedules as the held-out loss does: `scripts/bench_proxies.py`), and its temperatures are relative
to the starting loss's magnitude (the release's are in MSE units); it returns the lower, by the search's
loss, of the annealing's best and the climb's end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..schedule import CacheSchedule
from ..store import EvaluationRecord
from .budget import BudgetOutcome, Score


@dataclass(frozen=True)
class BudCachePlan:
    """The release's FLUX settings: 200 annealing moves, temperatures 0.05 to 1e-5, 70 % of moves within ±3
    steps, 10 % double moves, 2 far jumps per computed step in the climb's neighbourhood, at most 20 rounds."""

    anneal_moves: int = 200
    t_start: float = 0.05
    t_end: float = 1e-5
    near: float = 0.7
    radius: int = 3
    double_moves: float = 0.1
    far_jumps: int = 2
    climb_rounds: int = 20


class BudCacheSearch:
    """BudCache's search at a fixed budget: `score(schedules)` returns the calibration record of each digest
    (from the memo or by scoring), `cost(schedule)` its cost as a fraction of the uncached run's `measure`."""

    def __init__(
        self,
        template: CacheSchedule,
        budget: float,
        score: Score,
        cost: Callable[[CacheSchedule], float],
        seed: int = 0,
        plan: BudCachePlan | None = None,
        measure: str = "MACs",
    ) -> None:
        self.template, self.score = template, score
        self.plan = plan or BudCachePlan()
        self.rng = np.random.default_rng(seed)
        self.components = template.genome_length // (template.num_steps - 1)
        self.evaluations = 0
        self.moves = 0
        fitting = [n for n in range(1, template.num_steps + 1) if cost(self.schedule(self._first(n))) <= budget + 1e-12]
        if not fitting:
            cheapest = cost(self.schedule(self._first(1)))
            raise ValueError(
                f"no whole-step schedule costs at most {budget:.0%} of the uncached {measure} (step 0 alone costs "
                f"{cheapest:.0%}); give a larger budget"
            )
        self.nfe = max(fitting)
        self.prefix = max(1, self.nfe // 4)

    def _first(self, count: int) -> np.ndarray:
        computed = np.zeros(self.template.num_steps, dtype=bool)
        computed[:count] = True
        return computed

    def schedule(self, computed: np.ndarray) -> CacheSchedule:
        """The schedule in which every component computes at the `computed` steps (step 0 always does)."""
        return self.template.with_genome(np.repeat(computed[1:], self.components))

    def random_mask(self) -> np.ndarray:
        """The forced prefix and a uniform draw of the other computed steps."""
        computed = self._first(self.prefix)
        free = np.arange(self.prefix, self.template.num_steps)
        computed[self.rng.choice(free, self.nfe - self.prefix, replace=False)] = True
        return computed

    def _scored(self, masks: list[np.ndarray]) -> list[tuple[EvaluationRecord, np.ndarray]]:
        """The records of masks, scored as one batch (those that could not be scored are left out)."""
        built = [(self.schedule(mask), mask) for mask in masks]
        by_digest = {schedule.digest(): (schedule, mask) for schedule, mask in built}
        found = self.score({digest: schedule for digest, (schedule, _) in by_digest.items()})
        self.evaluations += len(by_digest)
        return [(found[digest], mask) for digest, (_, mask) in by_digest.items() if digest in found]

    def relocated(self, computed: np.ndarray) -> np.ndarray | None:
        """One annealing move: a computed step outside the prefix moved onto a cached step (near it with
        probability `near`); None where no step can move."""
        sources = np.flatnonzero(computed[self.prefix :]) + self.prefix
        targets = np.flatnonzero(~computed)
        if sources.size == 0 or targets.size == 0:
            return None
        source = int(self.rng.choice(sources))
        close = targets[np.abs(targets - source) <= self.plan.radius]
        target = int(self.rng.choice(close if close.size and self.rng.random() < self.plan.near else targets))
        moved = computed.copy()
        moved[source], moved[target] = False, True
        return moved

    def neighbourhood(self, computed: np.ndarray) -> list[np.ndarray]:
        """The climb's neighbours: every relocation of each computed step within `radius`, and `far_jumps`
        random farther ones."""
        neighbours = []
        targets = np.flatnonzero(~computed)
        for source in np.flatnonzero(computed[self.prefix :]) + self.prefix:
            distance = np.abs(targets - source)
            far = targets[distance > self.plan.radius]
            jumps = self.rng.choice(far, min(self.plan.far_jumps, far.size), replace=False) if far.size else far
            for target in [*targets[distance <= self.plan.radius], *jumps]:
                moved = computed.copy()
                moved[source], moved[target] = False, True
                neighbours.append(moved)
        return neighbours

    def run(self, on_move: Callable[[int, float], None] | None = None) -> BudgetOutcome:
        """From a random mask, anneal, then climb from where the annealing ended."""
        [(start_record, start)] = self._scored([self.random_mask()])
        current, current_record = start, start_record
        best, best_record = start, start_record
        scale = max(abs(start_record.quality_loss), 1e-6)
        plan = self.plan
        for index in range(plan.anneal_moves):
            temperature = scale * plan.t_start * (plan.t_end / plan.t_start) ** (index / max(plan.anneal_moves - 1, 1))
            candidate = self.relocated(current)
            if candidate is not None and self.rng.random() < plan.double_moves:
                candidate = self.relocated(candidate)
            if candidate is None:
                break
            scored = self._scored([candidate])
            self.moves += 1
            if not scored:
                continue
            [(record, _)] = scored
            delta = record.quality_loss - current_record.quality_loss
            if delta <= 0 or self.rng.random() < math.exp(-delta / temperature):
                current, current_record = candidate, record
            if record.quality_loss < best_record.quality_loss:
                best, best_record = candidate, record
            if on_move:
                on_move(self.moves, best_record.quality_loss)
        for _ in range(plan.climb_rounds):
            neighbours = self.neighbourhood(current)
            round_best = min(self._scored(neighbours), key=lambda pair: pair[0].quality_loss, default=None)
            self.moves += len(neighbours)
            if round_best is None or round_best[0].quality_loss >= current_record.quality_loss:
                break
            current_record, current = round_best
            if on_move:
                on_move(self.moves, min(best_record.quality_loss, current_record.quality_loss))
        if current_record.quality_loss < best_record.quality_loss:
            best, best_record = current, current_record
        return BudgetOutcome(
            self.schedule(best).with_metadata(name="budcache"),
            best_record,
            self.schedule(start).with_metadata(name="budcache-start"),
            start_record,
            self.evaluations,
            self.moves,
        )
