"""A search request checked and resolved against its model: what every part of a run reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..app.requests import SearchRequest
from ..evaluation import EvaluationSettings
from ..metrics import get_metric
from ..models import ModelSpec
from ..verdict import ClaimRules, claim_margins
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

    def claim_rules(self) -> ClaimRules:
        """How the run's claims are judged: the family its search minimised first, the margins it was given."""
        return claim_rules_for(self.settings, self.config.margins)


def claim_rules_for(settings: EvaluationSettings, margins: tuple[tuple[str, float], ...]) -> ClaimRules:
    """The claims rule for a split: its objective's family first, the metric's own quality margin and unit."""
    metric = get_metric(settings.metric)
    primary = "fidelity" if settings.objective == "fidelity" else "quality"
    return ClaimRules(primary, claim_margins(margins), metric.margin, metric.loss_unit)
