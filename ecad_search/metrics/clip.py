"""CLIP score: cosine similarity of image and prompt embeddings (optional, needs CLIP weights).

The model comes from `$CLIP_MODEL_DIR` or `openai/clip-vit-base-patch32` (the clip-score package's model)
through `transformers`; offline without a local copy it is a clear error. Images are resized and normalised
with plain torch, so no image-processing extras are needed.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from ..models.base import ModelSpec
from .base import MetricNotAvailableError, QualityMetric

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipMetric(QualityMetric):
    name = "clip"
    description = "CLIP image-text cosine similarity (optional, needs CLIP weights)"

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device

    @classmethod
    def load(cls, spec: ModelSpec | None = None, device: str = "cpu", *, local_only: bool = False) -> ClipMetric:
        from transformers import AutoTokenizer, CLIPModel

        source = os.environ.get("CLIP_MODEL_DIR", DEFAULT_CLIP)
        try:
            model = CLIPModel.from_pretrained(source, local_files_only=local_only).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError) as err:
            raise MetricNotAvailableError(
                f"cannot load CLIP from '{source}' ({type(err).__name__}); fetch {DEFAULT_CLIP} once or set "
                "CLIP_MODEL_DIR to a local copy"
            ) from err
        return cls(model, tokenizer, device)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        pixels = images.to(self.device, torch.float32)
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        pixels = F.interpolate(pixels, size=(224, 224), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        text = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        image_embeds = F.normalize(
            _projected(self.model.get_image_features(pixel_values=(pixels - mean) / std)), dim=-1
        )
        text_embeds = F.normalize(_projected(self.model.get_text_features(**text)), dim=-1)
        return (image_embeds * text_embeds).sum(dim=-1).cpu()


def _projected(features: Any) -> torch.Tensor:
    """transformers 4 returns the projected embedding; transformers 5 returns an output whose pooler is it."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


class ClipAdherence:
    """Adherence on text models (`families`): CLIP score × 100 per image, the convention papers report."""

    key = "adherence"

    def __init__(self, clip: ClipMetric) -> None:
        self.clip = clip

    def units(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor, images_per_prompt: int
    ) -> list[float]:
        return (100.0 * self.clip.score(images, prompts, None).double()).tolist()


def local_clip_adherence(device: str = "cpu") -> ClipAdherence | None:
    """CLIP adherence when CLIP's weights are already on this machine; None otherwise (nothing is fetched)."""
    try:
        return ClipAdherence(ClipMetric.load(None, device, local_only=True))
    except MetricNotAvailableError:
        return None


METRICS = (ClipMetric,)
