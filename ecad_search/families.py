"""The three families of figures every scored schedule carries, so that a claim can be held in all of them.

- quality: the search's metric (Fréchet rise, ImageReward, CLIP…), as its units (`QualityMetric.unit_scores`);
- fidelity: PSNR (dB) and SSIM to the uncached image of the same prompt and seed, per image;
- adherence: whether the image shows what the prompt asked for, per image, in points (0–100), as read by a
  judge the model's adapter names (digits: a network trained apart from the metric's; text models: CLIP
  score × 100 where its weights are installed).

A model's adapter may add a second quality judge (digits: the Fréchet rise in the judge network's features,
which no search optimised). Every family is stored per image (per seed for set metrics) under
`scores["families"]`, so any two schedules scored on the same split pair up image by image.

What the search minimises beside cost is its `objective`: the quality metric's loss, or the fidelity loss
(1 − mean PSNR / `PSNR_CAP_DB`, per prompt), which a fidelity search drives up without any other change to
the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

FAMILIES_KEY = "families"
OBJECTIVES = ("quality", "fidelity")
# An image identical to its reference has infinite PSNR; it counts as this many dB.
PSNR_CAP_DB = 100.0


class Judge(Protocol):
    """A figure beyond the search's metric, computed on every scored image set: stored under `key`."""

    key: str

    def units(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor, images_per_prompt: int
    ) -> list[float]: ...


@dataclass(frozen=True)
class Family:
    """How a stored figure enters a claim: its key in `scores["families"]`, its unit, and whether higher is
    better. Differences are always reported as `rival − baseline`, oriented so that positive favours the
    rival."""

    name: str
    key: str
    unit: str
    higher_is_better: bool = True

    def values(self, record_scores: dict[str, Any]) -> list[float] | None:
        found = record_scores.get(FAMILIES_KEY, {}).get(self.key)
        return None if found is None else [float(v) for v in found]


QUALITY = Family("quality", "quality", "")
FIDELITY = Family("fidelity", "psnr_db", "dB")
SSIM = Family("SSIM", "ssim", "")
ADHERENCE = Family("adherence", "adherence", "points")
SECOND_JUDGE = Family("quality, second judge", "quality_judge", "")
FAMILY_ORDER = (QUALITY, FIDELITY, ADHERENCE)


def load_judges(spec: Any, device: str = "cpu") -> list[Judge]:
    """The model family's judges; adherence as CLIP score × 100 where the family has no adherence judge and
    CLIP's weights are on this machine (never downloaded here)."""
    from .metrics.clip import local_clip_adherence
    from .models import get_family

    image_metrics()
    judges: list[Judge] = get_family(spec).judges(spec, device)
    if not any(judge.key == ADHERENCE.key for judge in judges):
        clip = local_clip_adherence(device)
        judges += [] if clip is None else [clip]
    return judges


@cache
def image_metrics() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """torchmetrics' PSNR and SSIM, imported once when an evaluator loads its judges, so that no scored
    candidate pays for the import (a worker's first candidate would look hung)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    return peak_signal_noise_ratio, structural_similarity_index_measure


def fidelity_units(images: torch.Tensor, references: torch.Tensor) -> dict[str, list[float]]:
    """PSNR (dB, capped) and SSIM of each image to its uncached reference (torchmetrics, as papers report)."""
    peak_signal_noise_ratio, structural_similarity_index_measure = image_metrics()
    ours, theirs = images.double(), references.double()
    psnr = peak_signal_noise_ratio(ours, theirs, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(ours, theirs, data_range=1.0, reduction="none")
    return {"psnr_db": psnr.clamp(max=PSNR_CAP_DB).tolist(), "ssim": ssim.tolist()}


def family_figures(
    quality_units: Sequence[float],
    images: torch.Tensor,
    references: torch.Tensor,
    prompts: list[str],
    images_per_prompt: int,
    judges: Sequence[Judge],
) -> dict[str, list[float]]:
    """Every family's units of one image set: what `scores["families"]` holds."""
    figures = {"quality": [float(u) for u in quality_units], **fidelity_units(images, references)}
    for judge in judges:
        figures[judge.key] = judge.units(images, prompts, references, images_per_prompt)
    return figures


def fidelity_prompt_scores(psnr_db: Sequence[float], images_per_prompt: int) -> list[float]:
    """The fidelity objective's units: each prompt's mean PSNR over `PSNR_CAP_DB`, so 1 − their mean is the
    loss (0 for the uncached images)."""
    per_prompt = [psnr_db[i : i + images_per_prompt] for i in range(0, len(psnr_db), images_per_prompt)]
    return [sum(values) / len(values) / PSNR_CAP_DB for values in per_prompt]


def objective_reference_loss(objective: str, metric: Any) -> float:
    """The loss that counts as worthless for the hypervolume: the metric's, or 1 for the fidelity loss."""
    return metric.reference_loss if objective == "quality" else 1.0


def mean(values: Sequence[float] | None) -> float | None:
    return None if not values else sum(values) / len(values)
