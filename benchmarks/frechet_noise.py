"""How much does a Fréchet loss on N images tell about the loss on many, per image generated?

A search decides on small image sets: the calibration split (8 seeds per digit on digits), and a
`--budget-preview` on fewer. The Fréchet distance of a set in 64 classifier features is not an average over
images, so its noise need not fall as 1/N. This bench generates many seeds per digit once for FORA-N, random
whole-step schedules and random component masks, then cuts the seeds into disjoint sets of G seeds per digit
and scores every set as a search would (the metric's own jackknife loss, against the uncached images of the
same seeds). Reported per set size: the spread of each schedule's loss over the sets, the variance of the
difference between two schedules scored on the same seeds (what a search compares), both times the images
per set (lower: more learnt per image), and the rank correlation of the sets' losses with the loss on all
seeds. One PNG of the variance per image against the set size. `--shape` adds whole-step schedules of one's
own (the steps they compute besides step 0), reported by their loss on all seeds only.

    python -m benchmarks.frechet_noise --out docs/bench_frechet_noise.json --plot docs/bench_frechet_noise.png \\
        --shape 11,13,15,17,19 --shape 1,2,17,18,19 --shape 15,16,17,18,19 --shape 1,16,17,18,19 \\
        --shape 1,2,14,15,16,17,18,19 --shape 1,2,3,4,16,17,18,19
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.heuristics import fora
from ecad_search.models import get_model
from ecad_search.models.base import ModelSpec
from ecad_search.models.digits import DIGIT_PROMPTS
from ecad_search.schedule import CacheSchedule
from ecad_search.search.budget import Lanes

from .common import parser as common_parser
from .common import write_json

FRESH_SEED = 3_000_000
FORA_N = (2, 3, 4, 6, 9)


def whole_steps(template: CacheSchedule, steps: list[int], name: str) -> CacheSchedule:
    """Every component computes at step 0 and at `steps`, and reuses its output elsewhere."""
    lanes = Lanes(template)
    grid = np.zeros((lanes.count, lanes.steps), dtype=bool)
    grid[:, [step - 1 for step in steps]] = True
    return template.with_genome(lanes.genome(grid), name=name)


def schedules(template: CacheSchedule, steps: int, masks: int, seed: int) -> list[CacheSchedule]:
    """FORA-N, `steps` random schedules of 5 whole steps (30 % MACs on digits) and `masks` random component
    masks computing 30 % of their components."""
    lanes, rng = Lanes(template), np.random.default_rng(seed)
    chosen = [fora(template.groups, template.num_steps, n) for n in FORA_N]
    for index in range(steps):
        computed = rng.choice(lanes.steps, size=5, replace=False) + 1
        chosen.append(whole_steps(template, computed.tolist(), f"steps-{index}"))
    for index in range(masks):
        grid = rng.random((lanes.count, lanes.steps)) < 0.3
        chosen.append(template.with_genome(lanes.genome(grid), name=f"components-{index}"))
    return chosen


def kind(name: str) -> str:
    return name.split("-")[0]


class SubsetLoss:
    """The losses a search would see for schedules on a subset of the seeds: the metric's jackknife rise over
    the uncached images of the same seeds. All schedules of one subset share one uncached tensor, so the metric
    computes its features and pseudo-values once per subset."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.prompts = len(evaluator.settings.prompts)
        self.per_prompt = evaluator.settings.images_per_prompt

    def indices(self, seeds: np.ndarray) -> np.ndarray:
        """Where `seeds`' images of every prompt sit in a schedule's images (prompt-major, seeds in order)."""
        return (np.arange(self.prompts)[:, None] * self.per_prompt + seeds[None, :]).ravel()

    def __call__(self, images: dict[str, torch.Tensor], seeds: np.ndarray) -> dict[str, float]:
        index = torch.from_numpy(self.indices(seeds))
        metric, references = self.evaluator.metric, self.evaluator.references[index]
        prompts = [self.evaluator.image_prompts[i] for i in index.tolist()]
        return {
            name: float(1.0 - metric.unit_scores(generated[index], prompts, references, len(seeds)).mean())
            for name, generated in images.items()
        }


def frechet_settings(spec: ModelSpec, args: argparse.Namespace) -> EvaluationSettings:
    """The Fréchet loss on `args.per_digit` seeds per digit from `args.seed`, at the model's defaults."""
    torch.set_num_threads(args.threads)
    return EvaluationSettings(
        model=spec.name, metric="frechet", prompts=tuple(DIGIT_PROMPTS), images_per_prompt=args.per_digit,
        steps=spec.default_steps, guidance_scale=spec.guidance_scale, resolution=spec.resolution, seed=args.seed,
    )  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = get_model(args.model)
    settings = frechet_settings(spec, args)
    if not all(2 <= size <= args.per_digit // 2 for size in args.sizes):
        raise SystemExit(f"--sizes: each from 2 (a jackknife) to {args.per_digit // 2} (two sets of --per-digit)")
    for steps in args.shape:
        if not all(1 <= step < spec.default_steps for step in steps):
            raise SystemExit(f"--shape {steps}: steps run from 1 to {spec.default_steps - 1} (step 0 always computes)")
    evaluator = Evaluator(spec, settings)
    loss = SubsetLoss(evaluator)
    chosen = schedules(evaluator.template, args.steps_schedules, args.mask_schedules, args.seed)
    shapes = [whole_steps(evaluator.template, steps, "shape-" + "-".join(map(str, steps))) for steps in args.shape]
    everything = np.arange(args.per_digit)
    full = loss({s.name: evaluator.generate(s)[0] for s in shapes}, everything)
    images = {schedule.name: evaluator.generate(schedule)[0] for schedule in chosen}
    full.update(loss(images, everything))
    pairs = [(a, b) for a, b in itertools.combinations(images, 2) if kind(a) == kind(b)]
    rows = []
    for size in args.sizes:
        sets = [np.arange(start, start + size) for start in range(0, args.per_digit - size + 1, size)]
        by_set = [loss(images, seeds) for seeds in sets]
        losses = {name: np.array([scored[name] for scored in by_set]) for name in images}
        spread = {
            k: float(np.mean([losses[n].var(ddof=1) for n in images if kind(n) == k]))
            for k in ("fora", "steps", "components")
        }
        paired = float(np.mean([(losses[a] - losses[b]).var(ddof=1) for a, b in pairs]))
        truth = [full[name] for name in images]
        ranks = [spearmanr([losses[name][i] for name in images], truth).statistic for i in range(len(sets))]
        rows.append({
            "seeds_per_digit": size, "images": size * len(DIGIT_PROMPTS), "sets": len(sets), "variance": spread,
            "paired_variance": paired, "paired_variance_per_image": paired * size * len(DIGIT_PROMPTS),
            "spearman": float(np.mean(ranks)), "spearman_min": float(np.min(ranks)),
        })  # fmt: skip
    macs = {s.name: evaluator.macs(s) / evaluator.full_macs for s in chosen + shapes}
    return {"per_digit": args.per_digit, "seed": args.seed, "full_loss": full, "macs_fraction": macs, "rows": rows}


def show(record: dict[str, Any], console: Console) -> None:
    table = Table(title="Fréchet loss on a set of N images: noise, and noise per image")
    for column in ("images", "sets", "sd FORA", "sd steps", "sd masks", "paired var", "× images", "rank corr"):
        table.add_column(column, justify="right")
    for row in record["rows"]:
        sd = {k: f"{np.sqrt(v):.2f}" for k, v in row["variance"].items()}
        table.add_row(
            str(row["images"]), str(row["sets"]), sd["fora"], sd["steps"], sd["components"],
            f"{row['paired_variance']:.2f}", f"{row['paired_variance_per_image']:.0f}", f"{row['spearman']:.2f}",
        )  # fmt: skip
    console.print(table)
    for name, loss in record["full_loss"].items():
        if name.startswith("shape-"):
            console.print(f"{name}: loss {loss:.2f} on all seeds ({record['macs_fraction'][name]:.1%} MACs)")


def plot(record: dict[str, Any], path: Path) -> None:
    rows = record["rows"]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r["images"] for r in rows], [r["paired_variance_per_image"] for r in rows], marker="o")
    axis.set_xlabel("images per evaluation")
    axis.set_ylabel("variance of a paired difference × images")
    axis.set_title("Fréchet loss (digits): noise per image generated")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def steps_list(text: str) -> list[int]:
    """`--shape 1,2,17`: whole numbers separated by commas."""
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not steps separated by commas, as 1,2,17,18,19") from None


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--per-digit", type=int, default=100, help="seeds per digit generated for each schedule")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 12, 16, 20], help="seeds per digit of a set")
    parser.add_argument("--steps-schedules", type=int, default=7, help="random whole-step schedules")
    parser.add_argument("--mask-schedules", type=int, default=4, help="random component masks")
    parser.add_argument(
        "--shape",
        type=steps_list,
        action="append",
        default=[],
        help="a whole-step schedule to report: the steps it computes besides 0, as 1,2,17,18,19 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=FRESH_SEED, help="first seed (and the random schedules' seed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--plot", type=Path, help="write the PNG")
    args = parser.parse_args(argv)
    record = measure(args)
    show(record, Console(width=80))
    if args.out:
        write_json(args.out, record)
    if args.plot:
        plot(record, args.plot)


if __name__ == "__main__":
    main()
