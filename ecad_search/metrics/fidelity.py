"""Fidelity of cached images to their uncached references: PSNR and SSIM, per image, for any model.

Both take batches (B, C, H, W) with values in [0, `data_range`] and return one value per image (B,), so a
search can average them or look at the worst prompt. Plain torch, no learned weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from .base import QualityMetric


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image; identical images give +inf (no cap)."""
    _check_shapes(images, references)
    error = (images.double() - references.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range**2 / error)).float()


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    """Normalised 2-D Gaussian (channels, 1, size, size) for a depthwise convolution."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    return torch.outer(profile, profile).expand(channels, 1, size, size).contiguous()


def ssim_window_size(height: int, width: int, window_size: int = 7) -> int:
    """The window actually used: `window_size`, shrunk to the largest odd size that fits the image.

    The usual 11×11 window (Wang et al. 2004) does not fit an 8×8 digit; 7×7 (scikit-image's default) does,
    leaving a 2×2 map of local statistics. Smaller images get a smaller odd window rather than padding,
    which would mix in values that are not in the image.
    """
    size = min(window_size, height, width)
    return size if size % 2 else size - 1


def ssim(
    images: torch.Tensor,
    references: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 7,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image (Gaussian-weighted, valid windows only), averaged over channels.

    Uses the standard constants K1 = 0.01, K2 = 0.03 and the window of `ssim_window_size`.
    """
    _check_shapes(images, references)
    channels, height, width = images.shape[1:]
    window = _gaussian_window(ssim_window_size(height, width, window_size), sigma, channels)
    x, y = images.double(), references.double()

    def local_mean(values: torch.Tensor) -> torch.Tensor:
        return F.conv2d(values, window, groups=channels)

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x**2
    var_y = local_mean(y * y) - mean_y**2
    covariance = local_mean(x * y) - mean_x * mean_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(dim=1).float()


def _check_shapes(images: torch.Tensor, references: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape != references.shape:
        raise ValueError(
            f"expected two (B, C, H, W) batches of the same shape, got {tuple(images.shape)} "
            f"and {tuple(references.shape)}"
        )


class FidelityMetric(QualityMetric):
    """Fidelity to the uncached output with the same prompt and seed: SSIM as the score, PSNR alongside.

    Needs no weights, so it works for every model; it is what the online-caching papers report."""

    name = "fidelity"
    description = "SSIM to the uncached image with the same prompt and seed (no weights; PSNR also stored)"
    needs_reference = True

    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        if references is None:
            raise ValueError("the fidelity metric needs the uncached reference images")
        return ssim(images, references)

    def extra_figures(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None
    ) -> dict[str, Any]:
        if references is None:
            return {}
        values = psnr(images, references)
        finite = values[torch.isfinite(values)]
        return {
            "psnr_db_mean": float(finite.mean()) if finite.numel() else None,
            "identical_images": int((~torch.isfinite(values)).sum()),
        }


METRICS = (FidelityMetric,)
