"""The best schedule at one cost budget, by local search (`BudgetRequest`).

A front is not always what a user wants: often it is one schedule at the MACs they can afford. This search
starts from the best heuristic schedule within the budget (FORA every N, by calibration loss) and improves
it with moves that keep its cost (`Moves`): one component's computation moved to another step of the same
component (most often within a few steps), and, while there is room under the budget, one more computation
switched on; half the climbing moves, and every annealing move, do the same with whole steps, which fills a
budget that single components would take dozens of moves to fill. Simulated annealing explores first, then
hill climbing takes the best improving neighbour, round after round, until a round improves nothing (the
stall criterion). Annealing is sequential (each move starts from the schedule it accepted last); a climbing
round's neighbours all start from the same schedule, so they are drawn first and scored as one batch. Where
the metric scores each prompt on its own, every move races on a share of the prompts (`racing.py`) against
the schedule it moved from, and is finished only if it could still be accepted.
It is BudCache's procedure (ICML 2026) on our component-level masks, with annealing temperatures relative
to the starting loss rather than in absolute loss units. The levers measured against it and not kept
(patience, previews, surrogate screening, batched climbing) are written up in docs/research/budget.md.

Every candidate is scored on the search's calibration split through the evaluation memo, so a repeated
budget search, or one on a database that already holds the masks, pays only for masks never seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..schedule import CacheSchedule
from ..store import EvaluationRecord

# Scores masks (from the memo or by generating): the record of each digest that could be scored.
Score = Callable[[dict[str, CacheSchedule]], dict[str, EvaluationRecord]]
# Scores masks against an incumbent: the records of those it does not beat by more than a margin (in loss
# units) on a share of the prompts.
Race = Callable[[dict[str, CacheSchedule], EvaluationRecord, float], dict[str, EvaluationRecord]]


@dataclass(frozen=True)
class Scoring:
    """How a phase of the search scores its masks: `score` them, and `race` them first where racing is on."""

    score: Score
    race: Race | None = None


@dataclass(frozen=True)
class BudgetPlan:
    """How long the local search runs: annealing moves (temperature falling geometrically from `t_start` to
    `t_end`, in units of the starting loss's magnitude), then hill-climbing rounds of `neighbours` moves each,
    stopping after `climb_rounds` or at the first round without improvement (BudCache's stall criterion).
    With `race` > 0, moves race on that share of the calibration prompts against the schedule they moved from
    (`racing.py`), where the metric scores each prompt on its own."""

    anneal_moves: int = 48
    t_start: float = 0.05
    t_end: float = 0.001
    neighbours: int = 12
    climb_rounds: int = 8
    race: float = 0.0

    @classmethod
    def of(cls, moves: int, race: float = 0.0) -> BudgetPlan:
        """`moves` annealing moves, then rounds of a quarter as many neighbours (at least 4)."""
        return cls(moves, neighbours=max(4, moves // 4), race=race)


@dataclass(frozen=True)
class Moves:
    """How a schedule moves while keeping its cost: a computation moved along its lane, within `radius` steps
    with probability `near`; annealing moves whole steps (every component of a step: BudCache's space, whose
    moves change the loss by more than calibration noise), and the climb moves whole steps with probability
    `step_share`, single components otherwise. `step_share` 1 keeps the whole search on whole steps, as
    BudCache's own masks are."""

    near: float = 0.7
    radius: int = 3
    step_share: float = 0.5

    def whole_steps(self, rng: np.random.Generator) -> bool:
        """Whether a climbing move moves whole steps (no draw where the answer is fixed)."""
        return self.step_share >= 1 or (self.step_share > 0 and rng.random() < self.step_share)


@dataclass(frozen=True)
class BudgetOutcome:
    """The best schedule found within the budget, its calibration record, and what the search spent."""

    schedule: CacheSchedule
    record: EvaluationRecord
    start: CacheSchedule
    start_record: EvaluationRecord
    evaluations: int
    moves: int


class Lanes:
    """The genome as lanes: one per block component (of every group), each a row of steps (step 0 excluded, as
    it always computes). Moving a computation along its lane keeps the schedule's MACs exactly."""

    def __init__(self, template: CacheSchedule) -> None:
        self.steps = template.num_steps - 1
        self.count = template.genome_length // self.steps

    def grid(self, genome: np.ndarray) -> np.ndarray:
        """(lanes, steps) from a genome laid out as `CacheSchedule.genome` does: per step, every component."""
        return genome.reshape(self.steps, self.count).T.copy()

    def genome(self, lanes: np.ndarray) -> np.ndarray:
        return lanes.T.reshape(-1)


def neighbour(
    lanes: np.ndarray, rng: np.random.Generator, moves: Moves, room: Callable[[int], bool]
) -> np.ndarray | None:
    """One move: a computation moved along its lane (near its step with probability `moves.near`), or, when
    `room(lane)` says the budget allows it, one more computation switched on. None when no move exists (a lane
    with nothing to move and no room to add)."""
    lane = int(rng.integers(lanes.shape[0]))
    row = lanes[lane]
    on, off = np.flatnonzero(row), np.flatnonzero(~row)
    if off.size == 0:
        return None
    moved = lanes.copy()
    if on.size == 0 and not room(lane):
        return None
    if on.size == 0 or (room(lane) and rng.random() < 0.25):
        moved[lane, rng.choice(off)] = True
        return moved
    source = int(rng.choice(on))
    close = off[np.abs(off - source) <= moves.radius]
    target = int(rng.choice(close if close.size and rng.random() < moves.near else off))
    moved[lane, source], moved[lane, target] = False, True
    return moved


class BudgetSearch:
    """Local search at a fixed budget, assembled from parts: `scoring` (records of masks, from the memo or by
    generating, racing where it can), `cost(schedule)` (a fraction of the uncached run's `measure`: MACs, or
    a latency model's prediction), `moves` (how a schedule moves) and `plan` (how long it anneals and climbs).

    With racing, a climbing round's neighbours race against the best schedule, and each annealing move against
    the current one with the margin its acceptance draw allows (a Metropolis move is accepted when its loss
    rises by less than -T ln u, so a move worse by more than that is rejected whatever the rest of the prompts
    say)."""

    def __init__(
        self,
        template: CacheSchedule,
        budget: float,
        scoring: Scoring,
        cost: Callable[[CacheSchedule], float],
        seed: int = 0,
        plan: BudgetPlan | None = None,
        moves: Moves | None = None,
        measure: str = "MACs",
    ) -> None:
        self.template, self.budget, self.cost = template, budget, cost
        self.scoring = scoring
        self.measure = measure
        self.plan = plan or BudgetPlan()
        self.moves = moves or Moves()
        self.rng = np.random.default_rng(seed)
        self.lanes = Lanes(template)
        self.evaluations = 0
        # The cost of one computation in each lane (the same at every step).
        empty = np.zeros(template.genome_length, dtype=bool)
        base = cost(template.with_genome(empty))
        self.lane_cost = np.array(
            [cost(template.with_genome(self._one(lane))) - base for lane in range(self.lanes.count)]
        )

    def _one(self, lane: int) -> np.ndarray:
        lanes = np.zeros((self.lanes.count, self.lanes.steps), dtype=bool)
        lanes[lane, 0] = True
        return self.lanes.genome(lanes)

    def _records(
        self, schedules: list[CacheSchedule], against: EvaluationRecord | None = None, margin: float = 0.0
    ) -> list[EvaluationRecord | None]:
        """The record of each schedule (None where it could not be scored, or, racing `against` an incumbent,
        where it lost the race by more than `margin`), scored as one batch: a pool spreads a batch over its
        workers, and in process its masks share their common first steps."""
        batch = {schedule.digest(): schedule for schedule in schedules}
        scoring = self.scoring
        found = scoring.race(batch, against, margin) if scoring.race and against is not None else scoring.score(batch)
        self.evaluations += len(schedules)
        return [found.get(schedule.digest()) for schedule in schedules]

    def run(self, starts: list[CacheSchedule], on_move: Callable[[int, float], None] | None = None) -> BudgetOutcome:
        """From the best of `starts` within the budget (by calibration loss), anneal, then climb."""
        affordable = [s for s in starts if self.cost(s) <= self.budget + 1e-12]
        if not affordable:
            cheapest = min(self.cost(s) for s in starts) if starts else 1.0
            raise ValueError(
                f"budget: no starting schedule costs at most {self.budget:.0%} of the uncached {self.measure} (the "
                f"cheapest costs {cheapest:.0%}); give a larger budget"
            )
        records = self.scoring.score({s.digest(): s for s in affordable})
        scored = [(records[s.digest()], s) for s in affordable if s.digest() in records]
        start_record, start = min(scored, key=lambda pair: (pair[0].quality_loss, pair[0].cost))
        best, best_record, moves = self._anneal(start, start_record, on_move)
        for _ in range(self.plan.climb_rounds):
            proposals = [self._propose(best, self.moves.whole_steps(self.rng)) for _ in range(self.plan.neighbours)]
            candidates = [candidate for candidate in proposals if candidate is not None]
            records = self._records(candidates, best_record)
            moves += len(candidates)
            if on_move:
                on_move(moves, best_record.quality_loss)
            scored = [(r, c) for r, c in zip(records, candidates, strict=True) if r is not None]
            round_best = min(scored, key=lambda pair: pair[0].quality_loss, default=None)
            if round_best is None or round_best[0].quality_loss >= best_record.quality_loss:
                break
            best_record, best = round_best
        return BudgetOutcome(best, best_record, start, start_record, self.evaluations, moves)

    def _anneal(
        self, start: CacheSchedule, start_record: EvaluationRecord, on_move: Callable[[int, float], None] | None
    ) -> tuple[CacheSchedule, EvaluationRecord, int]:
        """Simulated annealing on whole steps from `start`: the best schedule it saw, its record, and its moves."""
        best, best_record = start, start_record
        current, current_record = start, start_record
        scale = max(abs(start_record.quality_loss), 1e-6)
        plan, moves = self.plan, 0
        for index in range(plan.anneal_moves):
            fraction = index / max(plan.anneal_moves - 1, 1)
            temperature = scale * plan.t_start * (plan.t_end / plan.t_start) ** fraction
            candidate = self._propose(current, whole_steps=True)
            if candidate is None:
                continue
            # Racing draws the acceptance threshold first: a move worse than the current schedule by more than
            # the margin it may lose (-T ln u) is rejected on the race prompts alone.
            draw = self.rng.random() if self.scoring.race else None
            margin = -temperature * math.log(max(draw, 1e-300)) if draw is not None else 0.0
            [record] = self._records([candidate], current_record if draw is not None else None, margin)
            moves += 1
            if record is None:
                continue
            delta = record.quality_loss - current_record.quality_loss
            if delta <= 0 or (self.rng.random() if draw is None else draw) < math.exp(-delta / temperature):
                current, current_record = candidate, record
            if record.quality_loss < best_record.quality_loss:
                best, best_record = candidate, record
            if on_move:
                on_move(moves, best_record.quality_loss)
        return best, best_record, moves

    def _propose(self, schedule: CacheSchedule, whole_steps: bool) -> CacheSchedule | None:
        lanes = self.lanes.grid(schedule.genome())
        spare = self.budget - self.cost(schedule)
        if whole_steps:
            moved = self._step_move(lanes, spare)
        else:
            moved = neighbour(lanes, self.rng, self.moves, lambda lane: self.lane_cost[lane] <= spare + 1e-12)
        if moved is None:
            return None
        return self.template.with_genome(self.lanes.genome(moved))

    def _step_move(self, lanes: np.ndarray, spare: float) -> np.ndarray | None:
        """A move of whole steps: one lane stands for every component, computing where all of them do; a
        step it switches off stops every component there, a step it switches on computes every component."""
        steps = lanes.all(axis=0, keepdims=True)
        moved_steps = neighbour(steps, self.rng, self.moves, lambda _: self.lane_cost.sum() <= spare + 1e-12)
        if moved_steps is None:
            return None
        moved = lanes.copy()
        moved[:, steps[0] & ~moved_steps[0]] = False
        moved[:, moved_steps[0] & ~steps[0]] = True
        return moved
