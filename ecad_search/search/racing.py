"""Racing on prompts: a candidate is scored on a spread share of the calibration prompts first, and its other
images are generated only when, on those prompts, it could still enter the archive's front (the front search),
or still be taken over the schedule it moved from (`IncumbentRace`, the local search at a budget).

Per-image metrics score each prompt on its own (its seeds averaged), and every mask sees the same prompts and
seeds (common random numbers), so a candidate's race scores pair with the same prompts' scores of its rival:
the best front member that costs no more. A candidate that rival beats with a paired 95 % interval clear of zero
cannot enter the front on those prompts' evidence and is dropped; every other one is finished.

The race and the rest are evaluation settings of their own (their own memo keys), so a mask raced again reuses
its stored race scores. A finished mask's calibration record is its two parts merged back into the calibration
prompts' order: per-prompt scores do not depend on which other prompts were generated, so it is what one
evaluation on every prompt gives, and it is stored under the calibration key like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..evaluation import EvaluationSettings
from ..metrics import get_metric
from ..pool import OnOutcome
from ..schedule import CacheSchedule
from ..store import EvaluationRecord
from ..verdict import paired_difference
from .presets import Preset
from .splits import SplitScorer

# Fewer race prompts than this give the bootstrap too little to resample.
MIN_RACE_PROMPTS = 8


@dataclass(frozen=True)
class RaceSplit:
    """The calibration prompts split into the race and the rest; `race_positions` are the race prompts'
    positions among the calibration prompts, in order."""

    calibration: EvaluationSettings
    race: EvaluationSettings
    rest: EvaluationSettings
    race_positions: tuple[int, ...]

    def race_units(self, units: Sequence[float]) -> list[float]:
        """The race prompts' entries of per-prompt calibration scores."""
        return [units[i] for i in self.race_positions]

    def merged(self, race: EvaluationRecord, rest: EvaluationRecord) -> EvaluationRecord:
        """One mask's calibration record from its race and rest records (each prompt weighs alike)."""
        if race.digest != rest.digest:
            raise ValueError(f"cannot merge the records of two masks: {race.digest[:12]} and {rest.digest[:12]}")
        units = np.empty(len(self.calibration.prompts))
        rest_positions = np.setdiff1d(np.arange(units.size), self.race_positions)
        units[list(self.race_positions)] = race.scores["prompt_scores"]
        units[rest_positions] = rest.scores["prompt_scores"]
        share = len(self.race_positions) / units.size

        def mean(a: float, b: float) -> float:
            return share * a + (1 - share) * b

        latency = None if race.latency_s is None or rest.latency_s is None else mean(race.latency_s, rest.latency_s)
        return replace(
            race,
            quality_loss=float(1.0 - units.mean()),
            cost=mean(race.cost, rest.cost),
            macs=mean(race.macs, rest.macs),
            latency_s=latency,
            scores={"prompt_scores": units.tolist(), "raced_prompts": len(self.race_positions)},
            wall_time_s=race.wall_time_s + rest.wall_time_s,
        )


def race_split(calibration: EvaluationSettings, share: float) -> RaceSplit | None:
    """The race over `share` of the calibration prompts, spread evenly over them; None when the race would be
    under `MIN_RACE_PROMPTS` prompts or leave none for the rest."""
    count = len(calibration.prompts)
    raced = max(MIN_RACE_PROMPTS, round(share * count))
    if share <= 0 or raced >= count:
        return None
    positions = tuple(int(i) for i in np.unique(np.linspace(0, count - 1, raced).round().astype(int)))
    chosen = set(positions)
    rest = [prompt for i, prompt in enumerate(calibration.prompts) if i not in chosen]
    return RaceSplit(
        calibration,
        replace(calibration, prompts=tuple(calibration.prompts[i] for i in positions)),
        replace(calibration, prompts=tuple(rest)),
        positions,
    )


@dataclass(frozen=True)
class Rival:
    """A front member as a race sees it: its search loss, its cost and its scores on the race prompts."""

    loss: float
    cost: float
    race_units: Sequence[float]


def rival_of(cost: float, front: Sequence[Rival]) -> Rival | None:
    """The best front member that costs no more than `cost` (None when the candidate is the cheapest)."""
    cheaper = [member for member in front if member.cost <= cost]
    return min(cheaper, key=lambda member: (member.loss, member.cost)) if cheaper else None


def beaten(race_units: Sequence[float], cost: float, front: Sequence[Rival]) -> bool:
    """Whether a candidate scored `race_units` on the race prompts is out: its rival scores higher on them with
    a paired 95 % bootstrap interval that excludes zero."""
    rival = rival_of(cost, front)
    return rival is not None and paired_difference(rival.race_units, race_units).verdict > 0


def finish(
    split: RaceSplit,
    calibration: SplitScorer,
    rest: SplitScorer,
    raced: Mapping[str, EvaluationRecord],
    finishing: Mapping[str, CacheSchedule],
    on_outcome: OnOutcome | None = None,
) -> list[EvaluationRecord]:
    """Score the masks that survived their race on the rest of the prompts, and store each one's merged record
    under the calibration key, where the memo finds it like any other."""
    rested = rest.scores(finishing, on_outcome)
    merged = [split.merged(raced[digest], rested[digest]) for digest in finishing if digest in rested]
    calibration.store.record_evaluations(calibration.key, merged)
    calibration.load([record.digest for record in merged])
    return merged


class IncumbentRace:
    """Racing for the local search at a budget, where a move matters only if it beats the schedule it moved
    from, or loses to it by less than a margin (annealing may accept such a move): each new mask is scored on
    the race prompts first, and finished on the rest only when the incumbent does not beat it there by more
    than the margin, with a paired 95 % interval. Masks the calibration split already knows cost nothing; a
    mask dropped here is absent from the result, as one that could not be scored is. Per-prompt metrics'
    loss is one minus the mean unit score, so the margin in loss units is one in unit scores."""

    def __init__(self, split: RaceSplit, calibration: SplitScorer) -> None:
        self.split, self.calibration = split, calibration
        self.race = SplitScorer(split.race, calibration.store, calibration.pool)
        self.rest = SplitScorer(split.rest, calibration.store, calibration.pool)

    def __call__(
        self, schedules: Mapping[str, CacheSchedule], incumbent: EvaluationRecord, margin: float = 0.0
    ) -> dict[str, EvaluationRecord]:
        self.calibration.load(list(schedules))
        known = {digest: schedules[digest] for digest in schedules if self.calibration.known(digest)}
        found = self.calibration.scores(known)
        new = {digest: schedule for digest, schedule in schedules.items() if digest not in known}
        raced = self.race.scores(new)
        rival = self.split.race_units(incumbent.scores["prompt_scores"])
        finishing = {
            digest: schedule
            for digest, schedule in new.items()
            if digest in raced and paired_difference(rival, raced[digest].scores["prompt_scores"]).low <= margin
        }
        merged = finish(self.split, self.calibration, self.rest, raced, finishing)
        return {**found, **{record.digest: record for record in merged}}

    @property
    def dropped(self) -> int:
        """Masks raced now and not finished now: what the race saved images on."""
        return max(0, self.race.evaluated - self.rest.evaluated)

    def images(self) -> int:
        """Images generated by the race and the rest so far."""
        return sum(scorer.evaluated * scorer.settings.num_images for scorer in (self.race, self.rest))


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
