"""ImageReward (ECAD's quality objective): a BLIP-based reward model of human preference.

Optional: `pip install image-reward` and its weights (`THUDM/ImageReward`, fetched once into the hub cache or
into `$IMAGEREWARD_MODEL_DIR`). The score is the raw reward, so the search minimises `1 - mean reward`
exactly as ECAD does.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..models.base import ModelSpec
from .base import MetricNotAvailableError, QualityMetric


class ImageRewardMetric(QualityMetric):
    name = "image-reward"
    description = "ImageReward-v1.0 human-preference reward (optional extra, needs weights)"
    # Rewards spread over about ±2 per image; a twentieth of a unit is below what the papers report as a change.
    margin = 0.05

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "cpu") -> ImageRewardMetric:
        try:
            import ImageReward as reward_models
        except ImportError:
            raise MetricNotAvailableError(
                "metric 'image-reward' needs the optional package: pip install image-reward"
            ) from None
        try:
            model = reward_models.load(
                "ImageReward-v1.0", device=device, download_root=os.environ.get("IMAGEREWARD_MODEL_DIR")
            )
        except Exception as err:
            raise MetricNotAvailableError(
                f"cannot load ImageReward-v1.0 weights ({type(err).__name__}); fetch THUDM/ImageReward once "
                "with network access or set IMAGEREWARD_MODEL_DIR to a folder holding them"
            ) from err
        return cls(model)

    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        from PIL import Image

        scores = []
        for image, prompt in zip(images, prompts, strict=True):
            array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
            scores.append(float(self.model.score(prompt, [Image.fromarray(array)])))
        return torch.tensor(scores)


METRICS = (ImageRewardMetric,)
