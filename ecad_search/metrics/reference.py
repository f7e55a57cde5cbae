"""Fidelity figures against the same-seed uncached images, as the caching literature reports them: PSNR and
SSIM from torchmetrics (the implementations the field uses), per image.

SSIM uses torchmetrics' defaults (an 11×11 Gaussian window, σ = 1.5, reflected borders), so its figures
are comparable with published ones. The search's own `fidelity` metric keeps its valid-window SSIM (a 7×7
window that fits an 8×8 digit without reflected borders); the two differ by up to 0.02 on 8×8 images and by
under 0.001 on 64×64 ones (tests/test_compare.py checks both against each other).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

# An image identical to its reference has infinite PSNR; it counts as this many dB in means.
PSNR_CAP_DB = 100.0


def psnr_per_image(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    values = peak_signal_noise_ratio(
        images.double(), references.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return values.clamp(max=PSNR_CAP_DB).float()


def ssim_per_image(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    return structural_similarity_index_measure(
        images.double(), references.double(), data_range=1.0, reduction="none"
    ).float()


def reference_figures(images: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of the images to the uncached images of the same seeds."""
    return {
        "psnr_db": float(psnr_per_image(images, references).mean()),
        "ssim": float(ssim_per_image(images, references).mean()),
    }
