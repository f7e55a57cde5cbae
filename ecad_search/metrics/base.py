"""The quality-metric plug-in interface: score generated images, higher is better.

The search minimises `1 - mean score` over the calibration prompts and seeds, so every metric reports a
per-image score on a scale where 1 is "as good as it gets" (a probability, a similarity, SSIM) or, for
ImageReward, ECAD's convention of using the raw reward. A metric that compares with the uncached output
says so with `needs_reference`; the evaluator then generates those references once per run.

Paired comparisons (held-out verdicts, the selection guard) resample independent *units* of a candidate's
images: for a per-image metric one unit per prompt, its seeds averaged. A metric of the whole image set, such
as a Fréchet distance, overrides `unit_scores` to say what its units are.
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
    min_images_per_prompt: ClassVar[int] = 1
    reference_loss: ClassVar[float] = 1.0
    """The loss that counts as worthless: the hypervolume's reference point (1 for scores in [0, 1])."""
    loss_unit: ClassVar[str] = ""
    margin: ClassVar[float] = 0.005
    """How much higher a rival's loss may be, when quality is not a claim's primary family, for it to count
    as no worse (`verdict.Margins`): half a point of a score in [0, 1] by default."""
    units_are_prompts: ClassVar[bool] = True
    """Whether each unit score depends on its own prompt's images only, so that a prompt subset's scores are
    the full set's scores at those prompts (what racing on prompts needs)."""

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

    def unit_scores(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None, images_per_prompt: int
    ) -> torch.Tensor:
        """Scores (U,) of the units a paired comparison resamples; the quality loss is 1 − their mean.

        `images` hold `images_per_prompt` consecutive seeds per prompt. Per-image metrics: the mean score of
        each prompt's images.
        """
        scores = self.score(images, prompts, references).double()
        return scores.view(-1, images_per_prompt).mean(dim=1)

    def extra_figures(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None
    ) -> dict[str, Any]:
        """Other figures worth storing with an evaluation (e.g. PSNR next to SSIM)."""
        return {}
