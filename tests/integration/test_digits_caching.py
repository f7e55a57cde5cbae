"""What caching costs the bundled digits model, on fixed prompts and seeds.

The more MACs a family of schedules saves (FORA every N, whole-step skipping), the further its digits move
from real ones (Fréchet distance) and from the uncached samples (PSNR). The classifier reward does not fall:
the digit a sample shows is fixed by the class conditioning before any step can be cached, and reused outputs
pull each sample towards its class mean (within-class variance shrinks), which the classifier reads at
least as confidently. That is why the digits search never defaults to `--metric reward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest
import torch

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.heuristics import fora
from ecad_search.metrics.fidelity import psnr
from ecad_search.metrics.frechet import digits_frechet_distance
from ecad_search.models import get_model
from ecad_search.schedule import CacheSchedule

PROMPTS = tuple(f"a handwritten digit {d}" for d in range(10))
SEEDS_PER_DIGIT = 10


@dataclass(frozen=True)
class Cost:
    """Quality figures of one schedule against the uncached samples of the same seeds."""

    macs_saved: float
    reward: float
    frechet: float
    psnr: float
    within_class_variance: float


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    spec = get_model("digits")
    settings = EvaluationSettings(
        model="digits", metric="reward", prompts=PROMPTS, images_per_prompt=SEEDS_PER_DIGIT,
        steps=spec.default_steps, guidance_scale=spec.guidance_scale, resolution=spec.resolution, seed=100,
    )  # fmt: skip
    return Evaluator(spec, settings)


@pytest.fixture(scope="module")
def uncached(evaluator: Evaluator) -> torch.Tensor:
    return evaluator.generate(None)[0]


def skip_steps(template: CacheSchedule, count: int) -> CacheSchedule:
    """Whole-step skipping: `count` steps, evenly spread over steps 1..N-1, reuse every component."""
    skipped = np.unique(np.linspace(1, template.num_steps - 1, count).round().astype(int))
    masks = {}
    for _, group, mask in template.iter_groups():
        mask = mask.copy()
        mask[skipped] = False
        masks[group.name] = mask
    return template.with_metadata(masks=masks, name=f"skip-{count}")


def measure(evaluator: Evaluator, uncached: torch.Tensor, schedule: CacheSchedule) -> Cost:
    images, _ = evaluator.generate(schedule)
    per_digit = images.view(len(PROMPTS), SEEDS_PER_DIGIT, -1)
    return Cost(
        macs_saved=1 - evaluator.macs(schedule) / evaluator.full_macs,
        reward=float(evaluator.metric.score(images, evaluator.image_prompts, None).mean()),
        frechet=digits_frechet_distance(evaluator.metric.classifier, images),
        psnr=float(psnr(images, uncached).clamp(max=100).mean()),
        within_class_variance=float(per_digit.var(dim=1).mean()),
    )


def assert_costs_grow(costs: list[Cost]) -> None:
    costs = sorted(costs, key=lambda c: c.macs_saved)
    assert all(a.macs_saved < b.macs_saved for a, b in pairwise(costs))
    frechet = [c.frechet for c in costs]
    assert all(a < b for a, b in pairwise(frechet)), f"Fréchet distance must rise with MACs saved: {frechet}"
    fidelity = [c.psnr for c in costs]
    assert all(a > b for a, b in pairwise(fidelity)), f"PSNR to the uncached digits must fall: {fidelity}"
    variance = [c.within_class_variance for c in costs]
    assert all(a > b for a, b in pairwise(variance)), f"samples must collapse towards their class: {variance}"
    reward = [c.reward for c in costs]
    assert min(reward) > 0.999 and reward[-1] >= reward[0] - 1e-4, f"caching does not change the digit: {reward}"


def test_fora_costs_quality_monotonically(evaluator: Evaluator, uncached: torch.Tensor) -> None:
    template = evaluator.template
    schedules = [template] + [fora(template.groups, template.num_steps, n).with_metadata(model=template.model)
                              for n in (2, 3, 4)]  # fmt: skip
    assert_costs_grow([measure(evaluator, uncached, schedule) for schedule in schedules])


def test_whole_step_skipping_costs_quality_monotonically(evaluator: Evaluator, uncached: torch.Tensor) -> None:
    template = evaluator.template
    schedules = [template] + [skip_steps(template, k) for k in (3, 6, 10)]
    assert_costs_grow([measure(evaluator, uncached, schedule) for schedule in schedules])
