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

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from ..evaluation import EvaluationSettings
from ..families import FAMILIES_KEY
from ..pool import Candidate, EvaluationPool, OnOutcome, Outcome
from ..store import EvaluationRecord, FailureRecord, Store

CONFIRMATION_SEED_OFFSET = 500_000
# How often a driver looks for the results of masks another driver is scoring.
CLAIM_POLL_S = 1.0
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


class SplitScorer:
    """Scores on one split: from memory, else from the database, else by the pool now, each outcome stored
    the moment it arrives (a crash loses at most the candidates in flight).

    The pool loads a split (prompt embeddings, uncached references) only when it is given something to score,
    so a resumed run whose scores are all in the database never pays for them. A candidate that could not be
    scored is a failure, stored too, and never tried again on this split.
    """

    def __init__(
        self, settings: EvaluationSettings, store: Store, pool: EvaluationPool, *, needs_families: bool = False
    ) -> None:
        self.settings, self.store, self.pool = settings, store, pool
        # Claims and floors need every family; an evaluation stored before families existed is scored again
        # once, and its families fill in (`Store.record_evaluations`).
        self.needs_families = needs_families
        self.key = settings.key()
        self.records: dict[str, EvaluationRecord] = {}
        self.failures: dict[str, FailureRecord] = {}
        self.failed_here: set[str] = set()
        self.evaluated = 0

    def known(self, digest: str) -> bool:
        return digest in self.records or digest in self.failures

    def load(self, digests: list[str]) -> None:
        """Read what the database holds for these digests: evaluations, and failures."""
        unknown = [digest for digest in digests if not self.known(digest)]
        found = self.store.lookup(self.key, unknown)
        if self.needs_families:
            found = {digest: record for digest, record in found.items() if FAMILIES_KEY in record.scores}
        self.records.update(found)
        self.failures.update(self.store.failures(self.key, [digest for digest in unknown if digest not in found]))

    def scores(
        self, schedules: Mapping[str, Candidate], on_outcome: OnOutcome | None = None
    ) -> dict[str, EvaluationRecord]:
        """The record of every digest given (masks, or policies) that could be scored; only candidates this split
        never saw cost anything.

        Masks another driver on the same database is scoring right now (its claims) are left to it: their
        records are read from the database when they arrive, so no mask is ever scored twice at once.
        """
        self.load(list(schedules))
        waiting = [digest for digest in schedules if not self.known(digest)]
        if not waiting:
            return {digest: self.records[digest] for digest in schedules if digest in self.records}

        def record(outcome: Outcome) -> None:
            self._record(outcome)
            if on_outcome:
                on_outcome(outcome)

        with self.store.claims_kept():
            while waiting:
                mine = self.store.claim(self.key, waiting)
                self.load(sorted(mine))
                self.pool.evaluate(
                    self.settings, {d: schedules[d] for d in waiting if d in mine and not self.known(d)}, record
                )
                self.store.release_claims(self.key, sorted(mine))
                if not mine:
                    time.sleep(CLAIM_POLL_S)
                self.load(waiting)
                waiting = [digest for digest in waiting if not self.known(digest)]
        return {digest: self.records[digest] for digest in schedules if digest in self.records}

    def _record(self, outcome: Outcome) -> None:
        if isinstance(outcome, FailureRecord):
            self.store.record_failure(self.key, outcome)
            self.failures[outcome.digest] = outcome
            self.failed_here.add(outcome.digest)
            return
        self.store.record_evaluations(self.key, [outcome])
        self.records[outcome.digest] = outcome
        self.evaluated += 1


def pooled_loss(first: EvaluationRecord, second: EvaluationRecord) -> float:
    """The loss over both image sets together (weighted by their prompt counts, which are equal for
    calibration and confirmation)."""
    a, b = first.scores["prompt_scores"], second.scores["prompt_scores"]
    return float(1.0 - np.mean([*a, *b]))
