"""The in-process pool: one resident pipeline, an evaluator per split on it, masks scored in order.

It is also what each Ray worker runs inside its actor, so a mask is scored by the same code everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluation import EvaluationSettings, Evaluator, SplitInputs, encode_chunks
from ..generation import device_label
from ..models import ModelSpec, get_family
from .base import Candidate, EvaluationPool, OnOutcome, record_of


class LocalPool(EvaluationPool):
    """Evaluators built on first need; the first loads the pipeline and the metric, the others share them.
    Masks given together compute the first steps they share once, within `prefix_mib` (0: not at all)."""

    def __init__(self, spec: ModelSpec, device: str = "cpu", *, prefix_mib: int = 0) -> None:
        self.spec, self.device = spec, device
        self.prefix_bytes = prefix_mib * 2**20
        self._evaluators: dict[str, Evaluator] = {}

    def device_label(self) -> str:
        return device_label(self.device)

    def _first(self) -> Evaluator | None:
        """The evaluator that loaded the pipeline and the metric (the others share them)."""
        return next(iter(self._evaluators.values()), None)

    def evaluator(self, settings: EvaluationSettings, inputs: SplitInputs | None = None) -> Evaluator:
        """The split's evaluator, built on first need: from `inputs` when given, else computing them."""
        key = settings.key()
        if key not in self._evaluators:
            first = self._first()
            self._evaluators[key] = (
                Evaluator(self.spec, settings, device=self.device, inputs=inputs)
                if first is None
                else first.sibling(settings, inputs)
            )
        return self._evaluators[key]

    def split_inputs(self, settings: EvaluationSettings) -> SplitInputs:
        return self.evaluator(settings).inputs()

    def encode(self, settings: EvaluationSettings) -> SplitInputs:
        """Another split's prompt embeddings alone, on the loaded pipeline (its references come later, with
        no text encoder needed)."""
        first = self._first()
        if first is None:
            raise RuntimeError("encode a split only after the pool has loaded one (prepare it first)")
        return SplitInputs.on_cpu(encode_chunks(first.pipe, self.spec, settings), None, 0.0)

    def release_text_encoders(self) -> list[str]:
        """Drop the pipeline's text encoders: every split from here on must come with its inputs."""
        first = self._first()
        return [] if first is None else get_family(self.spec).release_text_encoders(first.pipe)

    def prepare(self, settings: EvaluationSettings, upcoming: Sequence[EvaluationSettings] = ()) -> float:
        """In-process the text encoders stay: later splits are encoded when first needed."""
        return self.evaluator(settings).full_seconds_per_image

    def evaluate(
        self, settings: EvaluationSettings, candidates: Mapping[str, Candidate], on_outcome: OnOutcome
    ) -> None:
        if not candidates:
            return
        evaluator = self.evaluator(settings)
        digests = list(candidates)
        for index, evaluation in evaluator.evaluate_many([candidates[d] for d in digests], self.prefix_bytes):
            on_outcome(record_of(digests[index], candidates[digests[index]], evaluation))

    def lane_gram(self, settings: EvaluationSettings) -> dict[str, Any]:
        from ..construct.lanes import lane_gram

        return lane_gram(self.evaluator(settings), seed=settings.seed)

    def close(self) -> None:
        self._evaluators.clear()
