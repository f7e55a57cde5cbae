"""Caching costs the bundled digits model quality: the more MACs a family of schedules saves, the higher the
Fréchet distance of its digits to real ones."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.heuristics import fora
from ecad_search.metrics.frechet import digits_frechet_distance
from ecad_search.models import get_model
from ecad_search.schedule import CacheSchedule

PROMPTS = tuple(f"a handwritten digit {d}" for d in range(10))


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    spec = get_model("digits")
    settings = EvaluationSettings(
        model="digits", metric="reward", prompts=PROMPTS, images_per_prompt=10, steps=spec.default_steps,
        guidance_scale=spec.guidance_scale, resolution=spec.resolution, seed=100,
    )  # fmt: skip
    return Evaluator(spec, settings)


def skip_steps(template: CacheSchedule, count: int) -> CacheSchedule:
    """Whole-step skipping: `count` steps, evenly spread over steps 1..N-1, reuse every component."""
    skipped = np.unique(np.linspace(1, template.num_steps - 1, count).round().astype(int))
    masks = {}
    for _, group, mask in template.iter_groups():
        mask = mask.copy()
        mask[skipped] = False
        masks[group.name] = mask
    return template.with_metadata(masks=masks, name=f"skip-{count}")


def quality(evaluator: Evaluator, schedule: CacheSchedule) -> tuple[float, float, float]:
    """(MACs saved, mean reward, Fréchet distance to real digits)."""
    images, _ = evaluator.generate(schedule)
    reward = float(evaluator.metric.score(images, evaluator.image_prompts, None).mean())
    distance = digits_frechet_distance(evaluator.metric.classifier, images)
    return 1 - evaluator.macs(schedule) / evaluator.full_macs, reward, distance


def assert_monotonic(figures: list[tuple[float, float, float]]) -> None:
    """Fréchet distance rises with the MACs saved. The classifier reward stays saturated (caching changes how
    realistic a digit looks, not which digit it is), so it is only checked to stay high; see the README."""
    figures = sorted(figures)
    saved, reward, distance = zip(*figures, strict=True)
    assert all(a < b for a, b in pairwise(saved)), saved
    assert all(a < b for a, b in pairwise(distance)), f"Fréchet distance must rise: {distance}"
    assert min(reward) > 0.99, reward


def test_fora_costs_quality_monotonically(evaluator: Evaluator) -> None:
    template = evaluator.template
    figures = [quality(evaluator, template)]
    figures += [
        quality(evaluator, fora(template.groups, template.num_steps, n).with_metadata(model=template.model))
        for n in (2, 3, 4)
    ]
    assert_monotonic(figures)



def test_whole_step_skipping_costs_quality_monotonically(evaluator: Evaluator) -> None:
    template = evaluator.template
    assert_monotonic([quality(evaluator, template)] + [quality(evaluator, skip_steps(template, k)) for k in (3, 6, 10)])
