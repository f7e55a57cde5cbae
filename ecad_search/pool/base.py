"""What every evaluation pool does: score masks on one split and hand back each outcome as it arrives.

The search never calls an evaluator itself; it gives a pool the masks a split still needs and records each
outcome the moment the pool reports it, so the same search code runs in-process and on Ray workers, and a
driver crash loses at most the candidates in flight.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation import Evaluation, EvaluationSettings, Evaluator
from ..fewer_steps import FewerSteps, fewer_steps_from_text, is_fewer_steps_text
from ..formats.policy import policy_from_text, policy_text
from ..policies import PolicyConfig
from ..schedule import CacheSchedule
from ..store import EvaluationRecord, FailureRecord


class PoolError(RuntimeError):
    """A pool that cannot start (Ray missing, no cluster at the address); reported in one line."""


# A mask that killed its worker (or raised) on every try is a failure, stored as the store keeps it.
Outcome = EvaluationRecord | FailureRecord
OnOutcome = Callable[[Outcome], None]


@dataclass(frozen=True)
class PoolStatus:
    """What the progress display shows about the workers: how many are alive, how many are busy (one candidate
    in flight each) and how many times one was restarted."""

    workers: int
    alive: int
    busy: int
    restarted: int

    def line(self) -> str:
        return f"workers {self.alive}/{self.workers} alive · {self.busy} busy · {self.restarted} restarted"


def genome_text(schedule: CacheSchedule) -> str:
    """A schedule's genome as the store keeps it: '0'/'1' characters."""
    return "".join("1" if bit else "0" for bit in schedule.genome())


def genome_bits(text: str) -> np.ndarray:
    """The genome back from its '0'/'1' characters."""
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


# What a pool scores: a mask, an online policy with its knobs, or the uncached pipeline at fewer steps.
Candidate = CacheSchedule | PolicyConfig | FewerSteps


def candidate_text(candidate: Candidate) -> str:
    """A candidate as text for the store and for workers: its genome, or its JSON document (policy, steps)."""
    if isinstance(candidate, FewerSteps):
        return candidate.text()
    return policy_text(candidate) if isinstance(candidate, PolicyConfig) else genome_text(candidate)


def candidate_of(text: str, template: CacheSchedule) -> Candidate:
    """A candidate back from `candidate_text` (a document starts with '{', a genome never does)."""
    if is_fewer_steps_text(text):
        return fewer_steps_from_text(text)
    return policy_from_text(text) if text.startswith("{") else template.with_genome(genome_bits(text))


def failure_of(digest: str, candidate: Candidate, error: str, attempts: int) -> FailureRecord:
    """A candidate that could not be scored, as the store keeps it."""
    if isinstance(candidate, CacheSchedule):
        return FailureRecord(digest, genome_text(candidate), error, attempts)
    return FailureRecord(digest, "", error, attempts, policy=candidate_text(candidate))


def resident_mib() -> tuple[float, float]:
    """This process's resident host memory (Linux) and the GPU memory its tensors hold (0 without CUDA)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    gpu = torch.cuda.memory_allocated() if torch.cuda.is_initialized() else 0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20, gpu / 2**20


def record_of(digest: str, candidate: Candidate, scored: Evaluator | Evaluation) -> EvaluationRecord:
    """A schedule's or policy's evaluation (made here by an evaluator, or given) as the store keeps it."""
    result = scored.evaluate(candidate) if isinstance(scored, Evaluator) else scored
    is_mask = isinstance(candidate, CacheSchedule)
    return EvaluationRecord(
        digest=digest,
        genome=genome_text(candidate) if is_mask else "",
        policy=None if is_mask else candidate_text(candidate),
        quality_loss=result.quality_loss,
        cost=result.cost,
        macs=result.macs,
        latency_s=result.latency_s,
        scores={"prompt_scores": result.prompt_scores, **result.figures},
        wall_time_s=result.wall_time_s,
    )


class EvaluationPool(ABC):
    """Scores masks on a split; `evaluate` returns when every mask given has an outcome."""

    workers = 0

    @abstractmethod
    def prepare(self, settings: EvaluationSettings, upcoming: Sequence[EvaluationSettings] = ()) -> float:
        """Load what the split needs (pipeline, prompt embeddings, uncached references) and return the uncached
        run's seconds per image (0 when the metric needs no uncached run and the cost is analytic). `upcoming`
        are the splits the run may need later: a pool may encode their prompts now, to drop its text encoders."""

    @abstractmethod
    def lane_gram(self, settings: EvaluationSettings) -> dict[str, Any]:
        """The calibration pass of construction on one split (`construct.lanes.lane_gram`), on one pipeline."""

    @abstractmethod
    def evaluate(
        self, settings: EvaluationSettings, candidates: Mapping[str, Candidate], on_outcome: OnOutcome
    ) -> None:
        """Score every candidate (digest → mask or policy), calling `on_outcome` once per candidate as soon as
        it is known."""

    @abstractmethod
    def device_label(self) -> str:
        """The device the pool's runs are timed on (`generation.device_label`)."""

    @property
    def status(self) -> PoolStatus:
        return PoolStatus(self.workers, self.workers, 0, 0)

    @abstractmethod
    def close(self) -> None:
        """Release the workers, or the resident pipeline in-process."""
