"""Does a Fréchet search's front beat FORA on images it never saw, with enough images to say so?

Takes the front a finished `--metric frechet` search wrote (RUN/front/*.json), and for FORA-2, -3 and -4 the
front's schedule with the best search loss at no more MACs (its rival, as in vs_fora.md). Both are scored on
fresh images, 50 seeds per digit from seed 2,000,000 (500 images, the sample size of the model's quality
table; no split of the search used these seeds), as the rise in Fréchet distance over the uncached model on
the same images. Reported: each distance, the paired difference FORA − rival with its 95 % bootstrap interval
over seeds, that difference relative to FORA's rise, and an independent check that the rival's samples show
the prompted digit (a pixel SVC shared with no objective, `ecad_search.models.digits.evaluate`). A second
interval resamples images within each digit and recomputes both distances (the usual FID interval), to compare with the
interval over per-seed jackknife units that the search's verdicts use.

    ecad-search --model digits --metric frechet --generations 8 --images-per-prompt 8 \\
        --held-out-images-per-prompt 24 --run frechet
    python -m benchmarks.frechet --front runs/frechet/front --out docs/bench_frechet.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.formats import load_schedule
from ecad_search.heuristics import fora
from ecad_search.metrics.frechet import FrechetReference, classifier_features
from ecad_search.models import get_model
from ecad_search.models.digits import DIGIT_PROMPTS, NUM_DIGITS
from ecad_search.models.digits.evaluate import pixel_accuracy, pixel_classifier
from ecad_search.schedule import CacheSchedule
from ecad_search.verdict import paired_difference

from .common import parser as common_parser
from .common import write_json

FRESH_SEED = 2_000_000
FORA_N = (2, 3, 4)
BOOTSTRAP_SAMPLES = 2000


def rival(front: list[CacheSchedule], macs: float) -> CacheSchedule:
    """The front's schedule with the lowest search loss at no more than `macs` (fraction of uncached)."""
    fitting = [s for s in front if s.metrics["macs_fraction"]["value"] <= macs + 1e-9]
    return min(fitting, key=lambda s: s.metrics["quality_loss"]["value"])


@dataclass(frozen=True)
class Scored:
    """One schedule on the fresh images: its figures, per-seed units and per-image classifier features."""

    figures: dict[str, float]
    units: np.ndarray
    features: np.ndarray
    images: torch.Tensor


def score(evaluator: Evaluator, schedule: CacheSchedule) -> Scored:
    """Generate once; the metric's units and figures and the features for the image bootstrap all come from it."""
    metric = evaluator.metric
    images, _ = evaluator.generate(schedule)
    per_prompt = evaluator.settings.images_per_prompt
    units = metric.unit_scores(images, evaluator.image_prompts, evaluator.references, per_prompt).numpy()
    distances = metric.extra_figures(images, evaluator.image_prompts, evaluator.references)
    figures = {"macs_fraction": evaluator.macs(schedule) / evaluator.full_macs, "rise": float(1 - units.mean())}
    features = classifier_features(metric.classifier, images).double().numpy()
    return Scored({**figures, **distances}, units, features, images)


def image_bootstrap(
    reference: FrechetReference, first: np.ndarray, second: np.ndarray, per_prompt: int, samples: int, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of FD(first) − FD(second), resampling images with replacement within each prompt (the
    same indices for both, so the comparison stays paired), the distance recomputed each time."""
    rng = np.random.default_rng(seed)
    prompts = first.shape[0] // per_prompt
    offsets = np.arange(prompts)[:, None] * per_prompt
    differences = []
    for _ in range(samples):
        chosen = (offsets + rng.integers(0, per_prompt, size=(prompts, per_prompt))).ravel()
        differences.append(reference.distance(first[chosen]) - reference.distance(second[chosen]))
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(low), float(high)


def compare(model: str, front_folder: Path, per_digit: int, seed: int, threads: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    spec = get_model(model)
    front = [load_schedule(path) for path in sorted(front_folder.glob("*.json"))]
    if not front:
        raise SystemExit(f"no schedule files in {front_folder}: pass the front/ folder of a finished run")
    settings = EvaluationSettings(
        model=spec.name,
        metric="frechet",
        prompts=tuple(DIGIT_PROMPTS),
        images_per_prompt=per_digit,
        steps=front[0].num_steps,
        guidance_scale=spec.guidance_scale,
        resolution=spec.resolution,
        seed=seed,
    )
    evaluator = Evaluator(spec, settings)
    reference = evaluator.metric.reference(evaluator.image_prompts)
    check = pixel_classifier()
    labels = torch.arange(NUM_DIGITS).repeat_interleave(per_digit)
    rows = []
    for n in FORA_N:
        theirs = score(evaluator, fora(evaluator.template.groups, evaluator.template.num_steps, n))
        chosen = rival(front, theirs.figures["macs_fraction"])
        ours = score(evaluator, chosen)
        difference = paired_difference(1 - theirs.units, 1 - ours.units)
        by_images = image_bootstrap(reference, theirs.features, ours.features, per_digit, BOOTSTRAP_SAMPLES)
        rise = theirs.figures["rise"]
        rows.append(
            {
                "baseline": f"fora-{n}",
                "fora": theirs.figures,
                "rival": {**ours.figures, "provenance": chosen.provenance},
                "difference": {"mean": difference.mean, "low": difference.low, "high": difference.high},
                "relative": {
                    "mean": difference.mean / rise,
                    "low": difference.low / rise,
                    "high": difference.high / rise,
                },
                "relative_image_bootstrap": {"low": by_images[0] / rise, "high": by_images[1] / rise},
                "rival_pixel_check_accuracy": pixel_accuracy(check, ours.images, labels),
            }
        )
    return rows


def show(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Fréchet rise over uncached on fresh images (lower is better)")
    columns = ("baseline", "MACs", "rival MACs", "FD: FORA", "rival", "uncached", "better by [seeds]", "[images]")
    for column in (*columns, "check"):
        table.add_column(column)
    for row in rows:
        fora_figures, rival_figures, relative = row["fora"], row["rival"], row["relative"]
        table.add_row(
            row["baseline"],
            f"{fora_figures['macs_fraction']:.3f}",
            f"{rival_figures['macs_fraction']:.3f}",
            f"{fora_figures['frechet_distance']:.2f}",
            f"{rival_figures['frechet_distance']:.2f}",
            f"{fora_figures['frechet_distance_uncached']:.2f}",
            f"{relative['mean']:.0%} [{relative['low']:.0%}, {relative['high']:.0%}]",
            f"[{row['relative_image_bootstrap']['low']:.0%}, {row['relative_image_bootstrap']['high']:.0%}]",
            f"{row['rival_pixel_check_accuracy']:.1%}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--front", type=Path, required=True, help="RUN/front folder of a frechet search")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--per-digit", type=int, default=50, help="fresh seeds per digit")
    parser.add_argument("--seed", type=int, default=FRESH_SEED, help="first seed of the fresh images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    rows = compare(args.model, args.front, args.per_digit, args.seed, args.threads)
    show(rows, Console(width=100))
    if args.out:
        record = {"per_digit": args.per_digit, "seed": args.seed, "rows": rows}
        write_json(args.out, record)


if __name__ == "__main__":
    main()
