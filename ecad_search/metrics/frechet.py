"""Fréchet distance between feature sets (the FID formula), and its digits form in digit-classifier features.

FD = ||μ₁ − μ₂||² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½). The matrix square root is taken in the symmetric
form (Σ₁^½ Σ₂ Σ₁^½ is symmetric positive semi-definite), through eigendecompositions with negative round-off
eigenvalues clipped to zero. That equals the usual tr((Σ₁Σ₂)^½) but never produces the small imaginary parts
`scipy.linalg.sqrtm` returns for the non-symmetric product, and it stays defined when the covariances are
singular (ReLU features, fewer samples than dimensions).
"""

from __future__ import annotations

import numpy as np
import torch

from ecad_search.metrics.reward import DigitClassifier, digits_split, load_real_digits


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D), in float64."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    cross = root_a @ cov_b @ root_a
    trace_cross = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_cross
    return float(max(distance, 0.0))


@torch.no_grad()
def classifier_features(classifier: DigitClassifier, images: torch.Tensor) -> torch.Tensor:
    """Penultimate digit-classifier features (N, D) of images (N,1,8,8) in [0,1], on the CPU."""
    device = next(classifier.parameters()).device
    return classifier.features(images.to(device, torch.float32)).cpu()


def digits_frechet_distance(
    classifier: DigitClassifier, images: torch.Tensor, reference: torch.Tensor | None = None
) -> float:
    """Fréchet distance of generated digits to real ones (all 1,797 sklearn digits, or `reference`)."""
    real = load_real_digits()[0] if reference is None else reference
    return frechet_distance(classifier_features(classifier, images), classifier_features(classifier, real))


def digits_frechet_floor(classifier: DigitClassifier) -> float:
    """Fréchet distance of the held-out real digits to the rest: roughly what a perfect generator scores.

    It is a floor only roughly: the held-out set (360 images) is a little smaller than a 500-sample
    evaluation, and finite-sample bias grows as sets shrink.
    """
    images, _ = load_real_digits()
    train, held_out = digits_split()
    return digits_frechet_distance(classifier, images[held_out], reference=images[train])
