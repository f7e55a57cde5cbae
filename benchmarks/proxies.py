"""Can a per-image score on a few images stand in for the Fréchet loss when a budget search screens its moves?

BudCache scores a mask by how far its final output lies from the uncached one (an MSE on one prompt). A
per-image score like that has no set-size penalty, so a preview on a few images would cost little; the
question is whether it ranks schedules as the search's objective does. This bench generates a few fresh
seeds per digit for the schedules of `benchmarks/frechet_noise.py` (FORA-N, random whole-step schedules, random
component masks and its `--shape` schedules) and ranks them by per-image scores, each as a rise over the
uncached image of the same seed: pixel MSE (BudCache's score), squared distance in the classifier's
features, −log p of the prompted digit, and squared feature distance to the real digits' class mean. The
truth is each schedule's Fréchet loss on 1,000 images, read from that bench's JSON. Reported: the Spearman
correlation over every schedule and over those of equal MACs (what a budget search compares).

    python -m benchmarks.proxies --out docs/bench_proxies.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.metrics.frechet import classifier_features
from ecad_search.models import get_model
from ecad_search.models.digits import DIGIT_PROMPTS, parse_digit_prompt
from ecad_search.schedule import CacheSchedule

from .common import parser as common_parser
from .common import write_json
from .frechet_noise import schedules, whole_steps

PROXY_SEED = 4_000_000


class Proxies:
    """Per-image scores of a batch of digits, against the real digits of each image's prompted class."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.metric = evaluator.metric
        self.labels = np.array([parse_digit_prompt(prompt) for prompt in evaluator.image_prompts])
        real, labels = self.metric.real_features, self.metric.real_labels
        self.class_means = np.stack([real[labels == digit].mean(axis=0) for digit in range(10)])
        self.uncached = evaluator.references
        self.uncached_features = self.features(self.uncached)
        self.uncached_scores = self.scores(self.uncached)

    def features(self, images: torch.Tensor) -> np.ndarray:
        return classifier_features(self.metric.classifier, images).double().numpy()

    def scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        features = self.features(images)
        with torch.no_grad():
            log_p = torch.log_softmax(self.metric.classifier(images), dim=-1).double().numpy()
        return {
            "pixel MSE to uncached": ((images - self.uncached) ** 2).flatten(1).mean(dim=1).double().numpy(),
            "feature distance to uncached": ((features - self.uncached_features) ** 2).sum(axis=1),
            "-log p(prompted digit)": -log_p[np.arange(len(self.labels)), self.labels],
            "distance to class mean": ((features - self.class_means[self.labels]) ** 2).sum(axis=1),
        }

    def rise(self, images: torch.Tensor) -> dict[str, float]:
        """Each score's mean rise over the uncached images of the same seeds."""
        return {name: float((v - self.uncached_scores[name]).mean()) for name, v in self.scores(images).items()}


def correlations(rises: dict[str, dict[str, float]], truth: dict[str, float], names: list[str]) -> dict[str, float]:
    proxies = next(iter(rises.values()))
    return {p: float(spearmanr([rises[n][p] for n in names], [truth[n] for n in names]).statistic) for p in proxies}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    noise = json.loads(args.truth.read_text())
    truth, macs = noise["full_loss"], noise["macs_fraction"]
    spec = get_model(args.model)
    rows = []
    for per_digit in args.per_digit:
        settings = EvaluationSettings(
            model=spec.name, metric="frechet", prompts=tuple(DIGIT_PROMPTS), images_per_prompt=per_digit,
            steps=spec.default_steps, guidance_scale=spec.guidance_scale, resolution=spec.resolution,
            seed=PROXY_SEED,
        )  # fmt: skip
        evaluator = Evaluator(spec, settings)
        proxies = Proxies(evaluator)
        # The noise bench's schedules, as it drew them (its seed, its counts of each kind).
        counts = [sum(name.startswith(kind) for name in truth) for kind in ("steps-", "components-")]
        chosen: list[CacheSchedule] = schedules(evaluator.template, *counts, noise["seed"])
        shapes = [name for name in truth if name.startswith("shape-")]
        chosen += [whole_steps(evaluator.template, [int(s) for s in n.split("-")[1:]], n) for n in shapes]
        rises = {s.name: proxies.rise(evaluator.generate(s)[0]) for s in chosen}
        names = list(rises)
        common = max({round(macs[n], 4) for n in names}, key=lambda m: sum(round(macs[n], 4) == m for n in names))
        equal = [n for n in names if round(macs[n], 4) == common]
        rows.append({
            "images": per_digit * len(DIGIT_PROMPTS), "schedules": len(names), "equal_macs": len(equal),
            "equal_macs_fraction": common, "spearman_all": correlations(rises, truth, names),
            "spearman_equal_macs": correlations(rises, truth, equal), "rises": rises,
        })  # fmt: skip
    return {"seed": PROXY_SEED, "truth": str(args.truth), "rows": rows}


def show(record: dict[str, Any], console: Console) -> None:
    for row in record["rows"]:
        table = Table(
            "per-image score", "all", f"equal MACs ({row['equal_macs']})",
            title=f"Spearman with the Fréchet loss on 1,000 images: scores on {row['images']} images",
        )  # fmt: skip
        for proxy, value in row["spearman_all"].items():
            table.add_row(proxy, f"{value:.2f}", f"{row['spearman_equal_macs'][proxy]:.2f}")
        console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--per-digit", type=int, nargs="+", default=[4, 10], help="fresh seeds per digit scored")
    parser.add_argument("--truth", type=Path, default=Path("docs/bench_frechet_noise.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if not args.truth.is_file():
        raise SystemExit(
            f"--truth {args.truth}: no such file; run python -m benchmarks.frechet_noise --out {args.truth}"
        )
    if min(args.per_digit) < 1:
        raise SystemExit(f"--per-digit {min(args.per_digit)}: give at least one seed per digit")
    record = measure(args)
    show(record, Console(width=80))
    if args.out:
        write_json(args.out, record)


if __name__ == "__main__":
    main()
