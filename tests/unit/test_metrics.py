"""Quality metrics: PSNR / SSIM against closed forms, Fréchet distance, and the shipped digit classifier."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ecad_search.metrics.fidelity import psnr, ssim, ssim_window_size
from ecad_search.metrics.frechet import (
    FrechetMetric,
    FrechetReference,
    classifier_features,
    digits_frechet_distance,
    digits_frechet_floor,
    frechet_distance,
    jackknife_pseudo_values,
)
from ecad_search.metrics.reward import (
    CLASSIFIER_DIR,
    digit_accuracy,
    digit_reward,
    digits_split,
    load_digit_classifier,
    load_real_digits,
    save_digit_classifier,
)


def _images(seed: int, shape: tuple[int, ...] = (4, 1, 8, 8), low: float = 0.2, high: float = 0.8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=generator)


def test_psnr_of_identical_images_is_infinite() -> None:
    images = _images(0)
    assert torch.isinf(psnr(images, images.clone())).all()


def test_psnr_matches_the_closed_form_per_image() -> None:
    images = _images(1)
    offsets = torch.tensor([0.1, 0.05, -0.02, 0.01]).view(4, 1, 1, 1)
    expected = 10 * torch.log10(1 / offsets.flatten() ** 2)
    torch.testing.assert_close(psnr(images + offsets, images), expected, rtol=1e-5, atol=1e-4)
    assert psnr(images + 0.1, images)[0].item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(2 * (images + 0.1), 2 * images, data_range=2.0)[0].item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_of_an_image_with_itself_is_one() -> None:
    images = _images(2, (3, 2, 8, 8))
    torch.testing.assert_close(ssim(images, images.clone()), torch.ones(3), rtol=0, atol=1e-6)


def test_ssim_decreases_as_noise_grows() -> None:
    images = _images(3, (1, 1, 8, 8), 0.0, 1.0).expand(4, 1, 8, 8)
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    levels = torch.tensor([0.0, 0.02, 0.1, 0.4]).view(4, 1, 1, 1)
    values = ssim(images + levels * noise, images).tolist()
    assert values[0] == pytest.approx(1.0) and all(a > b for a, b in itertools.pairwise(values))
    assert values[-1] < 0.5


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    """Constant images have no variance, so SSIM reduces to (2ab + C1) / (a² + b² + C1)."""
    a, b, c1 = 0.3, 0.6, 0.01**2
    value = ssim(torch.full((1, 1, 8, 8), a), torch.full((1, 1, 8, 8), b)).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)


def test_ssim_window_fits_small_images() -> None:
    assert [ssim_window_size(size, size) for size in (64, 8, 7, 6, 4, 1)] == [7, 7, 7, 5, 3, 1]
    assert ssim(_images(5, (2, 1, 4, 4)), _images(6, (2, 1, 4, 4))).shape == (2,)
    with pytest.raises(ValueError, match="same shape"):
        ssim(_images(5), _images(6, (4, 1, 8, 7)))


def _gaussian_features(seed: int, count: int = 400, dims: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dims)) @ rng.normal(size=(dims, dims))


def test_frechet_distance_of_a_set_with_itself_is_zero() -> None:
    features = _gaussian_features(0)
    assert frechet_distance(features, features.copy()) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_mean_shift_is_its_squared_norm() -> None:
    features = _gaussian_features(1)
    shift = np.array([0.5, -1.0, 2.0, 0.0, 0.25, 3.0])
    assert frechet_distance(features, features + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_frechet_distance_of_a_scaled_centred_set_is_the_covariance_trace() -> None:
    """N(0, Σ) against N(0, 4Σ): tr(Σ + 4Σ − 2·2Σ) = tr(Σ)."""
    features = _gaussian_features(2)
    features = features - features.mean(axis=0)
    expected = np.trace(np.cov(features, rowvar=False))
    assert frechet_distance(features, 2 * features) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_handles_singular_covariances() -> None:
    features = np.zeros((50, 8))
    features[:, 0] = np.arange(50.0)
    assert frechet_distance(features, features + 1.0) == pytest.approx(8.0, rel=1e-9)


@pytest.fixture(scope="module")
def classifier():
    return load_digit_classifier()


@pytest.fixture(scope="module")
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_real_digits()
    _, indices = digits_split()
    return images[indices], labels[indices]


def test_real_digits_are_images_in_unit_range_with_a_fixed_split() -> None:
    images, labels = load_real_digits()
    assert images.shape == (1797, 1, 8, 8) and images.min() == 0 and images.max() == 1
    train, test = digits_split()
    assert len(test) == 360 and len(set(train.tolist()) | set(test.tolist())) == 1797
    assert torch.equal(digits_split()[1], test)
    assert torch.bincount(labels[test]).min() >= 35


def test_shipped_classifier_reaches_97_percent_on_held_out_digits(classifier, held_out) -> None:
    assert digit_accuracy(classifier, *held_out) >= 0.97


def test_reward_of_real_digits_is_high_for_true_labels_and_low_for_wrong_ones(classifier, held_out) -> None:
    images, labels = held_out
    reward = digit_reward(classifier, images, labels)
    assert reward.shape == (len(labels),) and reward.min() >= 0 and reward.max() <= 1
    assert reward.mean() > 0.9
    assert digit_reward(classifier, images, (labels + 1) % 10).mean() < 0.05


def test_classifier_round_trips_through_safetensors(classifier, held_out, tmp_path: Path) -> None:
    save_digit_classifier(classifier, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(path.name for path in CLASSIFIER_DIR.iterdir()) == ["config.json", "model.safetensors"]
    reloaded = load_digit_classifier(tmp_path)
    images = held_out[0][:16]
    assert torch.equal(reloaded(images), classifier(images))
    assert classifier_features(classifier, images).shape == (16, classifier.config["features"])


def test_real_digits_sit_far_closer_to_real_digits_than_noise(classifier) -> None:
    floor = digits_frechet_floor(classifier)
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert 0 < floor < digits_frechet_distance(classifier, noise) / 10
    assert math.isfinite(floor)


def test_jackknife_pseudo_values_match_the_one_dimensional_closed_form() -> None:
    """1-D: FD = (μ₁ − μ₂)² + (σ₁ − σ₂)². Reference [−1, 1, −1, 1]: mean 0, variance 4/3 (ddof 1)."""
    reference = FrechetReference(np.array([[-1.0], [1.0], [-1.0], [1.0]]))
    groups = np.array([[[0.0], [2.0]], [[1.0], [3.0]]])

    def closed_form(mean: float, variance: float) -> float:
        return mean**2 + (math.sqrt(variance) - math.sqrt(4 / 3)) ** 2

    everything = closed_form(1.5, 5 / 3)
    without_first, without_second = closed_form(2.0, 2.0), closed_form(1.0, 2.0)
    expected = [2 * everything - without_first, 2 * everything - without_second]
    assert jackknife_pseudo_values(reference, groups) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="at least two groups"):
        jackknife_pseudo_values(reference, groups[:1])


def test_jackknife_removes_most_of_the_small_sample_bias() -> None:
    """Samples of the reference's own distribution: the plain distance is all bias, the jackknife's is not."""
    rng = np.random.default_rng(0)
    reference = FrechetReference(rng.normal(size=(20000, 8)))
    groups = rng.normal(size=(10, 20, 8))
    plain = reference.distance(groups.reshape(-1, 8))
    corrected = jackknife_pseudo_values(reference, groups).mean()
    assert plain > 0.1 and abs(corrected) < plain / 4


def _real_digits_by_prompt(held_out: tuple[torch.Tensor, torch.Tensor], per_digit: int) -> torch.Tensor:
    """Held-out real digits laid out like an evaluation: `per_digit` consecutive images of each digit."""
    images, labels = held_out
    return torch.cat([images[labels == digit][:per_digit] for digit in range(10)])


def test_frechet_metric_scores_the_rise_over_the_uncached_images(classifier, held_out) -> None:
    """Real digits as the "uncached" images: themselves score 0, a blur scores a rise, noise a huge one."""
    metric = FrechetMetric(classifier)
    real = _real_digits_by_prompt(held_out, 20)
    prompts = [f"a handwritten digit {digit}" for digit in range(10) for _ in range(20)]
    per_seed = classifier_features(classifier, real).double().numpy().reshape(10, 20, -1).transpose(1, 0, 2)
    corrected = jackknife_pseudo_values(metric.reference(prompts), per_seed).mean()
    assert corrected == pytest.approx(6.90, abs=0.01) and corrected == pytest.approx(
        digits_frechet_floor(classifier), abs=1.0
    ), "the corrected distance of 200 real digits is near the 360-digit floor"
    same = metric.unit_scores(real.clone(), prompts, real, 20)
    assert same.shape == (20,) and torch.allclose(same, torch.ones(20, dtype=torch.float64))
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    rise = float(1 - metric.unit_scores(blurred, prompts, real, 20).mean())
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    assert rise == pytest.approx(629.74, abs=0.01)
    assert 1 - metric.unit_scores(noise, prompts, real, 20).mean() > rise
    figures = metric.extra_figures(blurred, prompts, real)
    assert figures["frechet_distance_uncached"] == pytest.approx(15.53, abs=0.01)
    assert figures["frechet_distance"] > figures["frechet_distance_uncached"]
    with pytest.raises(TypeError, match="unit_scores"):
        metric.score(real, prompts, None)
    with pytest.raises(ValueError, match="uncached images"):
        metric.unit_scores(real, prompts, None, 20)


def test_frechet_metric_compares_with_the_prompted_digits_only(classifier, held_out) -> None:
    """Real even digits against real even digits are close; against all ten digits they are not."""
    metric = FrechetMetric(classifier)
    real = _real_digits_by_prompt(held_out, 20).view(10, 20, 1, 8, 8)[::2].reshape(-1, 1, 8, 8)
    even = [f"a handwritten digit {digit}" for digit in range(0, 10, 2) for _ in range(20)]
    own = metric.extra_figures(real, even, None)["frechet_distance"]
    against_all = metric.reference([str(digit) for digit in range(10)]).distance(classifier_features(classifier, real))
    assert own == pytest.approx(30.38, abs=0.01) and against_all > 15 * own
