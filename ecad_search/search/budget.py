"""The best schedule at one cost budget, by local search: `ecad-search --model M --budget 0.35`.

A front is not always what a user wants: often it is one schedule at the MACs they can afford. This search
starts from the best heuristic schedule within the budget (FORA every N, by calibration loss) and improves
it with moves that keep its cost: one component's computation moved to another step of the same component
(most often within a few steps), and, while there is room under the budget, one more computation switched
on; half the moves do the same with whole steps, which fills a budget that single components would take
dozens of moves to fill. Simulated annealing explores first, by default on whole steps only (their moves
change the loss by more than calibration noise, so it finds the good region of step-level masks), then hill
climbing, with both kinds of move, takes the best improving neighbour, round after round, until a round
improves nothing (the stall criterion) or, with a patience, until that many rounds in a row improve only
within noise (cheaper, and measured to find worse schedules).
Annealing is sequential (each move starts from the schedule it accepted last); a climbing round's neighbours
all start from the same schedule, so they are drawn first and scored as one batch. Where the metric scores
each prompt on its own, every move races on a share of the prompts (`racing.py`) against the schedule it
moved from, and is finished only if it could still be accepted. With a preview (`--budget-preview`), every
move is scored on fewer images of other seeds instead, and the calibration images decide between the best
of them: a multi-fidelity search that works for set metrics too, where racing on prompts cannot.
It is BudCache's procedure (ICML 2026) on our component-level masks, with annealing temperatures relative
to the starting loss rather than in absolute loss units.

Every candidate is scored on the search's calibration (or preview) split through the evaluation memo, so a
repeated budget search, or one on a database that already holds the masks, pays only for masks never seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..schedule import CacheSchedule
from ..store import EvaluationRecord
from .stats import paired_difference
from .surrogate import LossModel, MaskFeatures, fit_loss_model

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
    stopping after `climb_rounds`, at the first round without improvement, or after `patience` rounds in a row
    whose improvement is within noise (a paired 95 % interval over the two records' unit scores that holds
    zero; those steps are kept). `patience` 0 stops only where nothing improves, as BudCache does. `near` is
    the share of moves that stay within `radius` steps; `step_moves` the share that move whole steps (every
    component of a step), as BudCache's do. With `screen` > 1, each move draws that many proposals and
    generates the one the surrogate (`surrogate.py`, fitted on this search's evaluations) predicts best; a
    climbing round's moves all use the model fitted before the round. With `race` > 0, moves race on that share
    of the calibration prompts against the schedule they moved from (`racing.py`), where the metric scores
    each prompt on its own. With `coarse_anneal`, annealing moves whole steps only (BudCache's space, whose
    moves change the loss by more than calibration noise) and the climb that follows refines single components
    as well. With `preview` < 1, the starts, the annealing and each climbing round's neighbours are scored on
    that share of each prompt's images, on seeds of their own (a split); the calibration images then decide
    where the climb starts and which of a round's `finalists` (its best by the preview) it takes. With `batch`
    > 0, a climbing round's neighbours (all drawn first, so the random stream does not depend on it) are scored
    that many at a time, and the round takes the best of the first batch that holds an improvement: fewer
    images a round while the climb still gains, and a smaller winner's curse than the best of the whole round."""

    anneal_moves: int = 48
    t_start: float = 0.05
    t_end: float = 0.001
    neighbours: int = 12
    climb_rounds: int = 8
    near: float = 0.7
    radius: int = 3
    screen: int = 1
    step_moves: float = 0.5
    patience: int = 0
    race: float = 0.0
    coarse_anneal: bool = True
    preview: float = 1.0
    finalists: int = 2
    batch: int = 0

    @classmethod
    def of(
        cls,
        moves: int,
        screen: int = 1,
        step_moves: float = 0.5,
        patience: int = 0,
        race: float = 0.0,
        coarse_anneal: bool = True,
        preview: float = 1.0,
        finalists: int = 2,
        batch: int = 0,
    ) -> BudgetPlan:
        """The plan for `--budget-moves`, `--budget-patience`, `--budget-race`, `--budget-coarse` and
        `--budget-preview`: that many annealing moves, then rounds of a quarter as many neighbours (at
        least 4); each move the best of `screen` proposals by the surrogate, a round scored `batch` at a time."""
        return cls(
            moves, neighbours=max(4, moves // 4), screen=screen, step_moves=step_moves, patience=patience, race=race,
            coarse_anneal=coarse_anneal, preview=preview, finalists=finalists, batch=batch,
        )  # fmt: skip


@dataclass(frozen=True)
class BudgetOutcome:
    """The best schedule found within the budget, its calibration record, and what the search spent."""

    schedule: CacheSchedule
    record: EvaluationRecord
    start: CacheSchedule
    start_record: EvaluationRecord
    evaluations: int
    moves: int


def beyond_noise(better: EvaluationRecord, than: EvaluationRecord) -> bool:
    """Whether `better` scores higher than `than` with a paired 95 % interval over their unit scores; a loss
    without unit scores has no noise to be within, so any improvement counts."""
    ours, theirs = better.scores.get("prompt_scores"), than.scores.get("prompt_scores")
    if not ours or not theirs or len(ours) != len(theirs):
        return True
    return paired_difference(ours, theirs).verdict > 0


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
    lanes: np.ndarray, rng: np.random.Generator, plan: BudgetPlan, room: Callable[[int], bool]
) -> np.ndarray | None:
    """One move: a computation moved along its lane (near its step with probability `plan.near`), or, when
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
    close = off[np.abs(off - source) <= plan.radius]
    target = int(rng.choice(close if close.size and rng.random() < plan.near else off))
    moved[lane, source], moved[lane, target] = False, True
    return moved


class BudgetSearch:
    """Local search at a fixed budget. `score(schedules)` returns the calibration record of each digest (from
    the memo or by scoring), `cost(schedule)` its cost as a fraction of the uncached run's `measure` (MACs, or
    a latency model's prediction).

    `whole_steps` moves whole steps instead of single components: every component of a step computes or none
    does, as in BudCache's own step-level masks (the baseline `scripts/bench_budget.py` compares with).
    `race`, where given, scores a climbing round's neighbours against the best schedule, and each annealing
    move against the current one with the margin its acceptance draw allows (a Metropolis move is accepted
    when its loss rises by less than -T ln u, so a move worse by more than that is rejected whatever the
    rest of the prompts say). `preview`, where given, scores the starts, the annealing and each climbing
    round's neighbours instead, on fewer images (`BudgetPlan.preview`), and `score` decides on the
    calibration images: the climb starts from whichever of the annealing's best and the start scores lower
    there, and takes a round's best finalist only if it beats the best there."""

    def __init__(
        self,
        template: CacheSchedule,
        budget: float,
        score: Score,
        cost: Callable[[CacheSchedule], float],
        seed: int = 0,
        plan: BudgetPlan | None = None,
        whole_steps: bool = False,
        race: Race | None = None,
        measure: str = "MACs",
        preview: Scoring | None = None,
    ) -> None:
        self.template, self.budget, self.cost = template, budget, cost
        self.climbing = Scoring(score, race)
        self.previewing = preview or self.climbing
        self.measure = measure
        self.whole_steps = whole_steps
        self.plan = plan or BudgetPlan()
        self.rng = np.random.default_rng(seed)
        self.lanes = Lanes(template)
        self.evaluations = 0
        self.features = MaskFeatures(template)
        self.seen: dict[str, tuple[np.ndarray, float]] = {}
        self._model: tuple[int, LossModel | None] = (0, None)
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
        self,
        schedules: list[CacheSchedule],
        scoring: Scoring,
        against: EvaluationRecord | None = None,
        margin: float = 0.0,
    ) -> list[EvaluationRecord | None]:
        """The record of each schedule by `scoring` (None where it could not be scored, or, racing `against` an
        incumbent, where it lost the race by more than `margin`), scored as one batch: a pool spreads a batch
        over its workers, and in process its masks share their common first steps."""
        batch = {schedule.digest(): schedule for schedule in schedules}
        found = scoring.race(batch, against, margin) if scoring.race and against is not None else scoring.score(batch)
        self.evaluations += len(schedules)
        self._remember(batch, found)
        return [found.get(schedule.digest()) for schedule in schedules]

    def _remember(self, schedules: dict[str, CacheSchedule], records: dict[str, EvaluationRecord]) -> None:
        for digest, record in records.items():
            self.seen[digest] = (schedules[digest].genome(), record.quality_loss)

    def model(self) -> LossModel | None:
        """The surrogate on every evaluation this search has seen (refitted when there are new ones, in digest
        order); None without screening or below its minimum of evaluations."""
        if self.plan.screen <= 1:
            return None
        if self._model[0] != len(self.seen):
            digests = sorted(self.seen)
            genomes = np.stack([self.seen[d][0] for d in digests])
            losses = np.array([self.seen[d][1] for d in digests])
            self._model = (len(self.seen), fit_loss_model(self.features(genomes), losses))
        return self._model[1]

    def run(self, starts: list[CacheSchedule], on_move: Callable[[int, float], None] | None = None) -> BudgetOutcome:
        """From the best of `starts` within the budget (by calibration loss), anneal, then climb."""
        affordable = [s for s in starts if self.cost(s) <= self.budget + 1e-12]
        if not affordable:
            cheapest = min(self.cost(s) for s in starts) if starts else 1.0
            raise ValueError(
                f"no starting schedule costs at most {self.budget:.0%} of the uncached {self.measure} (the cheapest "
                f"costs {cheapest:.0%}); give a larger budget"
            )
        schedules = {s.digest(): s for s in affordable}
        records = self.previewing.score(schedules)
        self._remember(schedules, records)
        scored = [(records[s.digest()], s) for s in affordable if s.digest() in records]
        start_record, start = min(scored, key=lambda pair: (pair[0].quality_loss, pair[0].cost))
        best, best_record = start, start_record
        current, current_record = start, start_record
        scale = max(abs(start_record.quality_loss), 1e-6)
        moves = 0
        plan = self.plan
        for index in range(plan.anneal_moves):
            fraction = index / max(plan.anneal_moves - 1, 1)
            temperature = scale * plan.t_start * (plan.t_end / plan.t_start) ** fraction
            candidate = self._move(current, self.whole_steps or plan.coarse_anneal)
            if candidate is None:
                continue
            # Racing draws the acceptance threshold first: a move worse than the current schedule by more than
            # the margin it may lose (-T ln u) is rejected on the race prompts alone.
            draw = self.rng.random() if self.previewing.race else None
            margin = -temperature * math.log(max(draw, 1e-300)) if draw is not None else 0.0
            [record] = self._records([candidate], self.previewing, current_record if draw is not None else None, margin)
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
        if self.previewing is not self.climbing:
            start_record, best, best_record = self._rescored(start, best)
        within_noise = 0
        for _ in range(plan.climb_rounds):
            proposals = [self._move(best, self.whole_steps) for _ in range(plan.neighbours)]
            candidates = [candidate for candidate in proposals if candidate is not None]
            scored, tried = self._first_improving(candidates, best_record)
            moves += tried
            if on_move:
                on_move(moves, best_record.quality_loss)
            round_best = min(scored, key=lambda pair: pair[0].quality_loss, default=None)
            if round_best is None or round_best[0].quality_loss >= best_record.quality_loss:
                break
            within_noise = 0 if beyond_noise(round_best[0], best_record) else within_noise + 1
            best_record, best = round_best
            if plan.patience and within_noise >= plan.patience:
                break
        return BudgetOutcome(best, best_record, start, start_record, self.evaluations, moves)

    def _first_improving(
        self, candidates: list[CacheSchedule], best_record: EvaluationRecord
    ) -> tuple[list[tuple[EvaluationRecord, CacheSchedule]], int]:
        """A climbing round scored `plan.batch` neighbours at a time (the whole round at once with 0), stopping
        at the first batch that holds an improvement: its records so far, and how many neighbours were tried."""
        size = self.plan.batch or len(candidates) or 1
        scored: list[tuple[EvaluationRecord, CacheSchedule]] = []
        for first in range(0, len(candidates), size):
            scored += self._round(candidates[first : first + size], best_record)
            if any(record.quality_loss < best_record.quality_loss for record, _ in scored):
                return scored, min(first + size, len(candidates))
        return scored, len(candidates)

    def _round(
        self, candidates: list[CacheSchedule], best_record: EvaluationRecord
    ) -> list[tuple[EvaluationRecord, CacheSchedule]]:
        """A climbing round's neighbours with their calibration records: every one of them (racing against the
        best where racing is on), or, with a preview, the `plan.finalists` that the preview scores lowest. The
        round's winner is then chosen on images it was not chosen by, so the climb stops where a neighbour
        only looked better on the preview's images."""
        if self.previewing is self.climbing:
            finalists = candidates
        else:
            previewed = zip(self._records(candidates, self.previewing), candidates, strict=True)
            ranked = sorted(((r, c) for r, c in previewed if r is not None), key=lambda pair: pair[0].quality_loss)
            finalists = [candidate for _, candidate in ranked[: self.plan.finalists]]
        records = self._records(finalists, self.climbing, best_record)
        return [(record, c) for record, c in zip(records, finalists, strict=True) if record is not None]

    def _rescored(
        self, start: CacheSchedule, annealed: CacheSchedule
    ) -> tuple[EvaluationRecord, CacheSchedule, EvaluationRecord]:
        """The start's record on the climb's images, and the climb's first schedule with its record there: the
        annealing's best, or the start where that scores lower (the annealing picked its best on fewer images)."""
        both = list({start.digest(): start, annealed.digest(): annealed}.values())
        records = {s.digest(): record for s, record in zip(both, self._records(both, self.climbing), strict=True)}
        start_record = records.get(start.digest())
        if start_record is None:
            raise ValueError(f"could not score the starting schedule {start.name} on the calibration images")
        annealed_record = records.get(annealed.digest())
        if annealed_record is None or start_record.quality_loss <= annealed_record.quality_loss:
            return start_record, start, start_record
        return start_record, annealed, annealed_record

    def _move(self, schedule: CacheSchedule, whole_steps: bool) -> CacheSchedule | None:
        """One move from `schedule` (of whole steps only, or of either kind): the only proposal, or the best
        predicted of `plan.screen` unseen ones."""
        model = self.model()
        if model is None:
            return self._propose(schedule, whole_steps)
        proposals = {}
        for _ in range(self.plan.screen):
            proposal = self._propose(schedule, whole_steps)
            if proposal is not None and proposal.digest() not in self.seen:
                proposals[proposal.digest()] = proposal
        if not proposals:
            return self._propose(schedule, whole_steps)
        candidates = list(proposals.values())
        predicted = model.predict(self.features(np.stack([c.genome() for c in candidates])))
        return candidates[int(np.argmin(predicted))]

    def _propose(self, schedule: CacheSchedule, whole_steps: bool) -> CacheSchedule | None:
        lanes = self.lanes.grid(schedule.genome())
        spare = self.budget - self.cost(schedule)
        if whole_steps or (self.plan.step_moves > 0 and self.rng.random() < self.plan.step_moves):
            moved = self._step_move(lanes, spare)
        else:
            moved = neighbour(lanes, self.rng, self.plan, lambda lane: self.lane_cost[lane] <= spare + 1e-12)
        if moved is None:
            return None
        return self.template.with_genome(self.lanes.genome(moved))

    def _step_move(self, lanes: np.ndarray, spare: float) -> np.ndarray | None:
        """A move of whole steps: one lane stands for every component, computing where all of them do; a
        step it switches off stops every component there, a step it switches on computes every component."""
        steps = lanes.all(axis=0, keepdims=True)
        moved_steps = neighbour(steps, self.rng, self.plan, lambda _: self.lane_cost.sum() <= spare + 1e-12)
        if moved_steps is None:
            return None
        moved = lanes.copy()
        moved[:, steps[0] & ~moved_steps[0]] = False
        moved[:, moved_steps[0] & ~steps[0]] = True
        return moved
