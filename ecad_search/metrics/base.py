"""The quality-metric plug-in interface: score generated images, higher is better.

The search minimises `1 - mean score` over the calibration prompts and seeds, so every metric reports a
per-image score on a scale where 1 is "as good as it gets" (a probability, a similarity, SSIM) or, for
ImageReward, ECAD's convention of using the raw reward. A metric that compares with the uncached output
says so with `needs_reference`; the evaluator then generates those references once per run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from ..models.base import ModelSpec


class MetricNotAvailableError(RuntimeError):
    """A metric's optional package or weights are missing on this machine."""


class QualityMetric:
    """One quality metric; subclasses live one per module and are listed in that module's `METRICS`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False

    @classmethod
    def check(cls, spec: ModelSpec) -> None:
        """Refuse a model this metric cannot score, before anything is loaded (`MetricNotAvailableError`)."""

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "cpu") -> QualityMetric:
        """Build the metric for this model, loading any weights once."""
        return cls()

    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        """Per-image scores (N,) for images (N, C, H, W) in [0, 1] generated from `prompts` (one per image)."""
        raise NotImplementedError

    def extra_figures(self, images: torch.Tensor, references: torch.Tensor | None) -> dict[str, Any]:
        """Other figures worth storing with an evaluation (e.g. PSNR next to SSIM)."""
        return {}
