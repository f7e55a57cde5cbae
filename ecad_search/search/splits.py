"""The images a search looks at, split so that what it claims was never what it tuned on.

- calibration: the prompts × seeds every candidate is scored on; NSGA-II and the archive see only these.
- confirmation (the selection-bias guard): fresh seeds of the calibration prompts. A schedule enters the
  archive's front only with its confirmation scores pooled in, so a candidate that looked good on the
  calibration images by luck does not displace one that is good.
- held-out: other seeds (from `seed + HELD_OUT_SEED_OFFSET`) and, where the prompt set ships a companion,
  other prompts. It decides nothing: it scores the final front and the FORA baselines, and every claim
  (`vs_fora.md`, the last line of a run, exports) is made on it.

Each split is an `EvaluationSettings` with its own memo key, so its scores live in the same database as every
evaluation and are never paid for twice. `SplitScorer` scores masks on one split through that memo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from ..evaluation import EvaluationSettings, Evaluator
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, Store

CONFIRMATION_SEED_OFFSET = 500_000
HELD_OUT_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class Splits:
    """The evaluation settings of each split of one search (no confirmation without the guard)."""

    calibration: EvaluationSettings
    held_out: EvaluationSettings
    confirmation: EvaluationSettings | None


def make_splits(
    calibration: EvaluationSettings,
    held_out_prompts: tuple[str, ...],
    held_out_images_per_prompt: int,
    confirm: bool,
) -> Splits:
    """The confirmation and held-out settings that go with a calibration set (pure: no model is loaded)."""
    held_out = replace(
        calibration,
        prompts=held_out_prompts,
        images_per_prompt=held_out_images_per_prompt,
        seed=calibration.seed + HELD_OUT_SEED_OFFSET,
    )
    confirmation = replace(calibration, seed=calibration.seed + CONFIRMATION_SEED_OFFSET) if confirm else None
    return Splits(calibration, held_out, confirmation)


def distinct_prompts(prompts: tuple[str, ...], key: Callable[[str], str]) -> tuple[tuple[str, ...], int]:
    """The prompts with one phrasing kept per conditioning the model sees, and how many were dropped."""
    kept: dict[str, str] = {}
    for prompt in prompts:
        kept.setdefault(key(prompt), prompt)
    return tuple(kept.values()), len(prompts) - len(kept)


def record_of(digest: str, schedule: CacheSchedule, evaluator: Evaluator) -> EvaluationRecord:
    """Score one schedule and describe it as the store keeps it."""
    result = evaluator.evaluate(schedule)
    return EvaluationRecord(
        digest=digest,
        genome="".join("1" if bit else "0" for bit in schedule.genome()),
        quality_loss=result.quality_loss,
        cost=result.cost,
        macs=result.macs,
        latency_s=result.latency_s,
        scores={"prompt_scores": result.prompt_scores, **result.figures},
        wall_time_s=result.wall_time_s,
    )


class SplitScorer:
    """Scores on one split: from memory, else from the database, else generated now and stored at once.

    The evaluator is built on first need (`make_evaluator`), so a resumed run whose scores are all in the
    database never generates this split's prompt embeddings or uncached references.
    """

    def __init__(self, settings: EvaluationSettings, store: Store, make_evaluator: Callable[[], Evaluator]) -> None:
        self.settings, self.store, self._make_evaluator = settings, store, make_evaluator
        self._evaluator: Evaluator | None = None
        self.key = settings.key()
        self.records: dict[str, EvaluationRecord] = {}
        self.evaluated = 0

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = self._make_evaluator()
        return self._evaluator

    def scores(self, schedules: Mapping[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        """The record of every digest given; only masks never scored on this split cost anything."""
        missing = [digest for digest in schedules if digest not in self.records]
        self.records.update(self.store.lookup(self.key, missing))
        for digest in missing:
            if digest not in self.records:
                self.evaluate_and_record(digest, schedules[digest])
        return {digest: self.records[digest] for digest in schedules}

    def evaluate_and_record(self, digest: str, schedule: CacheSchedule) -> EvaluationRecord:
        """Generate and score now, and store at once (a crash loses at most this one)."""
        record = record_of(digest, schedule, self.evaluator)
        self.store.record_evaluations(self.key, [record])
        self.records[digest] = record
        self.evaluated += 1
        return record


def pooled_loss(first: EvaluationRecord, second: EvaluationRecord) -> float:
    """The loss over both image sets together (weighted by their prompt counts, which are equal for
    calibration and confirmation)."""
    a, b = first.scores["prompt_scores"], second.scores["prompt_scores"]
    return float(1.0 - np.mean([*a, *b]))
