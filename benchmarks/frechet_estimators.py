"""Would another estimator on 80 images rank schedules more as the 1,000-image Fréchet loss does?

A budget search on digits decides on 80 calibration images, and the Fréchet loss on 80 images in 64
classifier features is noisy (`benchmarks/frechet_noise.py`: rank correlation 0.84 with the loss on 1,000).
This bench generates the same schedules as that bench (FORA-N, random whole-step schedules, random
component masks) on many seeds per digit, cuts the seeds into disjoint sets, and scores every set with
several estimators, each as a rise over the uncached images of the same seeds:
- the metric's own loss (jackknife Fréchet distance in all 64 features);
- the plain Fréchet distance in all 64 features;
- the Fréchet distance in the leading principal components of the real digits' features (fewer
  dimensions: a better-conditioned covariance from few images);
- the kernel distance (unbiased MMD², cubic polynomial kernel, as KID), which has no covariance to estimate.
It reports each estimator's mean rank correlation, over the sets, with the metric's loss on all seeds (the
held-out judge a search is measured by): over every schedule, and over the whole-step schedules alone, which
all cost the same MACs, as the moves of a budget search do.

    python -m benchmarks.frechet_estimators --out docs/bench_frechet_estimators.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from ecad_search.evaluation import Evaluator
from ecad_search.metrics.frechet import FrechetReference, classifier_features
from ecad_search.models import get_model
from ecad_search.models.digits import DIGIT_PROMPTS

from .common import parser as common_parser
from .common import write_json
from .frechet_noise import FRESH_SEED, SubsetLoss, frechet_settings, schedules

# A set's features (N, D) -> its distance to the real digits.
Distance = Callable[[np.ndarray], float]


def kernel_distance(real: np.ndarray) -> Distance:
    """Unbiased MMD² to the real features with KID's kernel (x·y / D + 1)³; the real-real term is a constant
    of the reference and cancels in a rise, so it is left out."""
    dimensions = real.shape[1]

    def distance(features: np.ndarray) -> float:
        within = (features @ features.T / dimensions + 1.0) ** 3
        count = features.shape[0]
        own = (within.sum() - np.trace(within)) / (count * (count - 1))
        across = ((features @ real.T / dimensions + 1.0) ** 3).mean()
        return float(own - 2.0 * across)

    return distance


def principal_frechet(real: np.ndarray, components: int) -> Distance:
    """The Fréchet distance in the `components` leading principal directions of the real features."""
    centred = real - real.mean(axis=0)
    directions = np.linalg.svd(centred, full_matrices=False)[2][:components].T
    reference = FrechetReference(real @ directions)
    return lambda features: reference.distance(features @ directions)


def estimators(real: np.ndarray, components: list[int]) -> dict[str, Distance]:
    plain = FrechetReference(real)
    chosen: dict[str, Distance] = {"plain Fréchet, 64 features": plain.distance}
    for count in components:
        chosen[f"Fréchet, {count} principal components"] = principal_frechet(real, count)
    chosen["kernel distance (KID)"] = kernel_distance(real)
    return chosen


def measure(args: argparse.Namespace) -> dict[str, object]:
    spec = get_model(args.model)
    settings = frechet_settings(spec, args)
    if not 2 <= args.size <= args.per_digit // 2:
        raise SystemExit(f"--size: from 2 (a jackknife) to {args.per_digit // 2} (two sets of --per-digit)")
    evaluator = Evaluator(spec, settings)
    metric = evaluator.metric
    loss = SubsetLoss(evaluator)
    chosen = schedules(evaluator.template, args.steps_schedules, args.mask_schedules, args.seed)
    images = {schedule.name: evaluator.generate(schedule)[0] for schedule in chosen}
    truth = loss(images, np.arange(args.per_digit))

    def features(tensor: torch.Tensor) -> np.ndarray:
        return classifier_features(metric.classifier, tensor).double().numpy()

    generated = {name: features(tensor) for name, tensor in images.items()}
    uncached = features(evaluator.references)
    sets = [np.arange(start, start + args.size) for start in range(0, args.per_digit - args.size + 1, args.size)]
    by_set = {"jackknife Fréchet, 64 features (the metric)": [loss(images, seeds) for seeds in sets]}
    for label, distance in estimators(metric.real_features, args.components).items():
        by_set[label] = []
        for seeds in sets:
            index = loss.indices(seeds)
            base = distance(uncached[index])
            by_set[label].append({name: distance(generated[name][index]) - base for name in images})
    groups = {"all": list(images), "equal MACs": [name for name in images if name.startswith("steps-")]}
    rows = {
        label: {
            group: [spearmanr([s[n] for n in names], [truth[n] for n in names]).statistic for s in scored]
            for group, names in groups.items()
        }
        for label, scored in by_set.items()
    }
    return {
        "per_digit": args.per_digit, "images_per_set": args.size * len(DIGIT_PROMPTS), "sets": len(sets),
        "seed": args.seed, "schedules": len(images),
        "spearman": {k: {g: float(np.mean(c)) for g, c in v.items()} for k, v in rows.items()},
        "spearman_min": {k: {g: float(np.min(c)) for g, c in v.items()} for k, v in rows.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--per-digit", type=int, default=100, help="seeds per digit generated for each schedule")
    parser.add_argument("--size", type=int, default=8, help="seeds per digit of a set (8: 80 images, a calibration)")
    parser.add_argument("--components", type=int, nargs="+", default=[16, 8], help="principal components kept")
    parser.add_argument("--steps-schedules", type=int, default=7, help="random whole-step schedules")
    parser.add_argument("--mask-schedules", type=int, default=4, help="random component masks")
    parser.add_argument("--seed", type=int, default=FRESH_SEED, help="first seed (and the random schedules' seed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    record = measure(args)
    title = (
        f"rank correlation with the loss on all seeds: {record['images_per_set']} images a set, {record['sets']} sets"
    )
    table = Table("estimator", "all", "lowest", "equal MACs", "lowest", title=title)
    for label, value in record["spearman"].items():
        lowest = record["spearman_min"][label]
        table.add_row(label, *(f"{figure:.2f}" for g in value for figure in (value[g], lowest[g])))
    Console(width=80).print(table)
    if args.out:
        write_json(args.out, record)


if __name__ == "__main__":
    main()
