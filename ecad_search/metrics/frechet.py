"""Fréchet distance between feature sets (the FID formula), and its digits form in digit-classifier features.

FD = ||μ₁ − μ₂||² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½). The matrix square root is taken in the symmetric
form (Σ₁^½ Σ₂ Σ₁^½ is symmetric positive semi-definite), through eigendecompositions with negative round-off
eigenvalues clipped to zero. That equals the usual tr((Σ₁Σ₂)^½) but never produces the small imaginary parts
`scipy.linalg.sqrtm` returns for the non-symmetric product, and it stays defined when the covariances are
singular (ReLU features, fewer samples than dimensions).

As a search objective (`--metric frechet`, digits) the distance is taken between a candidate's images and
the real digits of the prompted classes, in the bundled classifier's features: the FID analogue ECAD
reports, a measure of quality against data rather than of distance to the uncached image, so a schedule can
do better than no caching. A distance belongs to a whole image set, so its paired comparisons resample
seeds: the jackknife over seeds gives each seed a pseudo-value whose mean is the bias-corrected distance
(Fréchet distances shrink as sets grow, and the correction removes the first-order part of that).
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.base import ModelSpec
from .base import QualityMetric
from .reward import DigitClassifier, digits_split, load_real_digits, pipeline_classifier, require_digits


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


class FrechetReference:
    """The Gaussian of a reference feature set (N, D), with its covariance's square root computed once, so
    each distance to it costs one eigendecomposition."""

    def __init__(self, features: torch.Tensor | np.ndarray):
        values = np.asarray(features, dtype=np.float64)
        self.mean = values.mean(axis=0)
        self.cov = np.atleast_2d(np.cov(values, rowvar=False))
        self.root = _psd_sqrt(self.cov)

    def distance(self, features: torch.Tensor | np.ndarray) -> float:
        """Fréchet distance of the Gaussian fitted to `features` (M, D) to this one, in float64."""
        values = np.asarray(features, dtype=np.float64)
        cov = np.atleast_2d(np.cov(values, rowvar=False))
        cross = self.root @ cov @ self.root
        trace_cross = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0.0, None)).sum()
        gap = values.mean(axis=0) - self.mean
        distance = gap @ gap + np.trace(self.cov) + np.trace(cov) - 2.0 * trace_cross
        return float(max(distance, 0.0))


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D), in float64."""
    return FrechetReference(features_a).distance(features_b)


def jackknife_pseudo_values(reference: FrechetReference, groups: np.ndarray) -> np.ndarray:
    """Leave-one-group-out pseudo-values (G,) of the distance of all features `groups` (G, M, D) to `reference`.

    Pseudo-value g is G·FD(all) − (G−1)·FD(all but g); their mean is the jackknife bias-corrected distance
    and their spread its standard error, so they serve as the units of a paired bootstrap.
    """
    count = groups.shape[0]
    if count < 2:
        raise ValueError("a jackknife needs at least two groups of images (seeds per prompt ≥ 2)")
    everything = reference.distance(groups.reshape(-1, groups.shape[-1]))
    rest = np.array(
        [reference.distance(np.delete(groups, g, axis=0).reshape(-1, groups.shape[-1])) for g in range(count)]
    )
    return count * everything - (count - 1) * rest


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


class _ImageSet:
    """One evaluated image set and its figures against its reference, each computed on first use."""

    def __init__(self, images: torch.Tensor, features: np.ndarray, reference: FrechetReference) -> None:
        self.images, self.features, self.reference = images, features, reference
        self._pseudo_values: np.ndarray | None = None
        self._distance: float | None = None

    def pseudo_values(self, per_prompt: int) -> np.ndarray:
        """Jackknife pseudo-values, one per seed (that seed's image of every prompt)."""
        if self._pseudo_values is None:
            per_seed = self.features.reshape(-1, per_prompt, self.features.shape[-1]).transpose(1, 0, 2)
            self._pseudo_values = jackknife_pseudo_values(self.reference, per_seed)
        return self._pseudo_values

    def distance(self) -> float:
        """The plain distance of the whole set."""
        if self._distance is None:
            self._distance = self.reference.distance(self.features)
        return self._distance


class FrechetMetric(QualityMetric):
    """Digits: how much a schedule raises the Fréchet distance to real digits over the uncached model's.

    Both distances are taken on the same seeds (common random numbers), so the seed set's own luck, which moves
    the distance of 80 images by more than any schedule does, cancels; the loss is 0 for the uncached run and
    negative for a schedule whose images are closer to real digits than the uncached ones.
    """

    name = "frechet"
    description = "digits: rise in Fréchet distance to real digits over the uncached run (FID analogue)"
    needs_reference = True
    min_images_per_prompt = 2
    reference_loss = 100.0
    loss_unit = "FD"
    # One unit of Fréchet distance: a tenth of what FORA-4 adds to the bundled model's (about 10).
    margin = 1.0
    units_are_prompts = False

    def __init__(self, classifier: DigitClassifier) -> None:
        self.classifier = classifier
        images, labels = load_real_digits()
        self.real_features = classifier_features(classifier, images).double().numpy()
        self.real_labels = labels.numpy()
        self._image_sets: dict[int, _ImageSet] = {}
        self._references: dict[frozenset[int], FrechetReference] = {}

    def reference(self, prompts: list[str]) -> FrechetReference:
        """The real digits of the prompted classes: the distance compares like with like (a set of even digits
        is not penalised for lacking odd ones)."""
        from ..models.digits.prompts import parse_digit_prompt

        digits = frozenset(parse_digit_prompt(prompt) for prompt in prompts)
        if digits not in self._references:
            chosen = np.isin(self.real_labels, sorted(digits))
            self._references[digits] = FrechetReference(self.real_features[chosen])
        return self._references[digits]

    def _image_set(self, images: torch.Tensor, slot: int, prompts: list[str]) -> _ImageSet:
        """What is known of `images`, kept per slot (0: the candidate, 1: the uncached images, which stay the same
        for an evaluator's life, so their features, pseudo-values and distance are computed once)."""
        kept = self._image_sets.get(slot)
        if kept is None or kept.images is not images:
            features = classifier_features(self.classifier, images).double().numpy()
            kept = self._image_sets[slot] = _ImageSet(images, features, self.reference(prompts))
        return kept

    @classmethod
    def check(cls, spec: ModelSpec) -> None:
        require_digits("frechet", spec, "fidelity or image-reward")

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "cpu") -> FrechetMetric:
        cls.check(spec)
        return cls(pipeline_classifier(spec.pipeline_id, device))

    def score(self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        raise TypeError("the Fréchet distance belongs to an image set, not to one image: use unit_scores")

    def unit_scores(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None, images_per_prompt: int
    ) -> torch.Tensor:
        """One unit per seed (that seed's image of every prompt): 1 − the difference of the candidate's and the
        uncached images' jackknife pseudo-values, so the loss, 1 − the mean, is the bias-corrected rise."""
        if references is None:
            raise ValueError("the frechet metric needs the uncached images of the same seeds")
        candidate = self._image_set(images, 0, prompts).pseudo_values(images_per_prompt)
        uncached = self._image_set(references, 1, prompts).pseudo_values(images_per_prompt)
        return torch.from_numpy(1.0 - (candidate - uncached))

    def extra_figures(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None
    ) -> dict[str, float]:
        """The plain distances of the candidate's and the uncached images, the figures FID tables report."""
        figures = {"frechet_distance": self._image_set(images, 0, prompts).distance()}
        if references is not None:
            figures["frechet_distance_uncached"] = self._image_set(references, 1, prompts).distance()
        return figures


METRICS = (FrechetMetric,)
