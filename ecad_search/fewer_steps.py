"""The baseline everyone thinks of first: the uncached pipeline run at fewer steps.

`FewerSteps(k)` is a candidate like a mask or a policy: the evaluator runs the pipeline uncached at `k`
steps with its own scheduler (the scheduler's own k-step timesteps, not a subset of the N-step ones), and its
MACs are those of `k` full steps. It is stored as a small JSON document, so the memo and the workers treat it
as they treat a policy.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

FORMAT = "ecad-search.fewer-steps"


@dataclass(frozen=True)
class FewerSteps:
    steps: int

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"`steps` of a fewer-steps baseline must be a positive integer, got {self.steps!r}")

    @property
    def label(self) -> str:
        return f"{self.steps} steps"

    def text(self) -> str:
        """The canonical document the store keeps (sorted keys, no spaces)."""
        return json.dumps({"format": FORMAT, "steps": self.steps}, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


def is_fewer_steps_text(text: str) -> bool:
    return text.startswith("{") and f'"format":"{FORMAT}"' in text


def fewer_steps_from_text(text: str) -> FewerSteps:
    return FewerSteps(int(json.loads(text)["steps"]))


def fewer_steps_within(cost: float, steps: int) -> FewerSteps | None:
    """The most steps whose MACs (k/N of the uncached run's) stay within `cost` (a fraction); None below one
    step. A small tolerance keeps 7 of 20 steps within a cost of 0.35 that was computed in floating point."""
    k = math.floor(cost * steps + 1e-9)
    return FewerSteps(k) if k >= 1 else None
