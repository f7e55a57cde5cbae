"""A search request checked and resolved against its model: what every part of a run reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..app.requests import SearchRequest
from ..evaluation import EvaluationSettings
from ..models import ModelSpec
from .splits import Splits


@dataclass(frozen=True)
class PreparedSearch:
    """Checked options: the model, the image splits and the names derived from them; `notes` are what the
    user should read before the run starts (prompts collapsed, say)."""

    config: SearchRequest
    spec: ModelSpec
    splits: Splits
    population: int
    run: str
    out: Path
    notes: tuple[str, ...] = ()

    @property
    def settings(self) -> EvaluationSettings:
        """The calibration settings: what every candidate is scored on."""
        return self.splits.calibration
