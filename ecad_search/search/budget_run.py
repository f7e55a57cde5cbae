"""A budget search as a run: the local search (`budget.py`) on a search's calibration split, its result and
start judged on the held-out images, and, for a latency budget, the latency model it kept to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..cost.latency import UNCACHED, LatencyModel, latency_probes
from ..errors import FieldError
from ..evaluation import EvaluationSettings, run_template, schedule_macs
from ..fewer_steps import FewerSteps, fewer_steps_within
from ..heuristics import fora
from ..pool import Candidate, EvaluationPool, genome_bits
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, Store
from ..verdict import ClaimRules
from .budget import BudgetOutcome, BudgetPlan, BudgetSearch, Moves, Scoring
from .prepared import PreparedSearch
from .racing import IncumbentRace, prompt_race
from .splits import SplitScorer


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
    fewer_steps: FewerSteps | None = None
    rules: ClaimRules = field(default_factory=ClaimRules)

    @property
    def images(self) -> int:
        """Images generated now, on both splits (and the timed runs of a latency budget)."""
        return self.calibration_images + self.held_out_images


@dataclass(frozen=True)
class LatencyCheck:
    """What a latency-budget search kept to, and what it found: the latency model fitted on this device,
    the uncached run's measured seconds per image, and the found schedule's latency as a fraction of it, as
    the model predicts it and as measured (None when it could not be timed)."""

    model: LatencyModel
    uncached_s: float
    predicted: float
    measured: float | None


def latency_split(settings: EvaluationSettings, pool: EvaluationPool) -> EvaluationSettings:
    """The calibration prompts and seeds with a latency cost, on the pool's device: where a latency budget
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
        raise FieldError(f"`budget_latency`: could not time the probe schedules {missing}; see the log above")
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
    held_out = SplitScorer(prepared.splits.held_out, store, pool, needs_families=True)
    fewer = fewer_steps_within(budget, settings.steps)
    judged: list[Candidate] = [outcome.schedule, outcome.start, *([fewer] if fewer else [])]
    records = held_out.scores({candidate.digest(): candidate for candidate in judged})
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
    rules = prepared.claim_rules()
    return BudgetRun(outcome, records, evaluated, dropped, calibration_images, held_out_images, check, fewer, rules)


def earlier_fronts(store: Store, template: CacheSchedule, eval_key: str) -> list[CacheSchedule]:
    """The last archived front of every search on this calibration split: free starting points, already
    scored."""
    digests = {d for run in store.list_runs() if run.eval_key == eval_key for d in _last_archive(store, run.name)}
    records = store.evaluations_for(eval_key, sorted(digests))
    return [template.with_genome(genome_bits(r.genome), name=f"front-{r.digest[:8]}") for r in records if r.genome]


def _last_archive(store: Store, run: str) -> tuple[str, ...]:
    generations = store.generations(run)
    return generations[-1].archive if generations else ()


def latency_line(check: LatencyCheck) -> str:
    measured = "could not be timed" if check.measured is None else f"measured {check.measured:.1%}"
    return (
        f"latency: predicted {check.predicted:.1%} of the uncached {check.uncached_s:.3g} s per image, {measured} "
        "on this device"
    )


def held_out_line(run: BudgetRun) -> str | None:
    """The found schedule against where it started and against the uncached pipeline at the most steps the
    budget affords, on the held-out images, under the claims rule; None where nothing was scored."""
    outcome, records = run.outcome, run.held_out
    ours = records.get(outcome.schedule.digest())
    if ours is None:
        return None
    lines = [f"held out: loss {ours.quality_loss:.4g}; {run.rules.text()}"]
    baselines = [(outcome.start.name or "the start", outcome.start.digest())]
    if run.fewer_steps is not None:
        baselines.append((run.fewer_steps.label, run.fewer_steps.digest()))
    for name, digest in baselines:
        theirs = records.get(digest)
        claim = None if theirs is None else run.rules.judge(ours.scores, theirs.scores)
        if theirs is None or claim is None:
            continue
        figures = "; ".join(f"{f.family} {f.text()}" for f in (claim.primary, *claim.others))
        lines.append(f"  vs {name} (loss {theirs.quality_loss:.4g}): {claim.verdict} ({figures})")
    return "\n".join(lines)
