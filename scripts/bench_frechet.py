"""Does a Fréchet search's front beat FORA on images it never saw, with enough images to say so?

Takes the front a finished `--metric frechet` search wrote (RUN/front/*.json), and for FORA-2, -3 and -4 the
front's schedule with the best search loss at no more MACs (its rival, as in vs_fora.md). Both are scored on
fresh images, 50 seeds per digit from seed 2,000,000 (500 images, the sample size of the model's quality
table; no split of the search used these seeds), as the rise in Fréchet distance over the uncached model on
the same images. Reported: each distance, the paired difference FORA − rival with its 95 % bootstrap interval
over seeds, that difference relative to FORA's rise, and an independent check that the rival's samples show
the prompted digit (a pixel SVC shared with no objective, `eval_digits.py`).

    ecad-search --model digits --metric frechet --generations 8 --images-per-prompt 8 \\
        --held-out-images-per-prompt 24 --run frechet
    python scripts/bench_frechet.py --front runs/frechet/front --out docs/bench_frechet.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from ecad_search.evaluation import Evaluation, EvaluationSettings, Evaluator
from ecad_search.formats import load_schedule
from ecad_search.heuristics import fora
from ecad_search.models import get_model
from ecad_search.models.digits import DIGIT_PROMPTS, NUM_DIGITS
from ecad_search.schedule import CacheSchedule
from ecad_search.search.stats import paired_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_digits import pixel_accuracy, pixel_classifier

FRESH_SEED = 2_000_000
FORA_N = (2, 3, 4)


def rival(front: list[CacheSchedule], macs: float) -> CacheSchedule:
    """The front's schedule with the lowest search loss at no more than `macs` (fraction of uncached)."""
    fitting = [s for s in front if s.metrics["macs_fraction"]["value"] <= macs + 1e-9]
    return min(fitting, key=lambda s: s.metrics["quality_loss"]["value"])


def figures(evaluation: Evaluation) -> dict[str, float]:
    return {
        "macs_fraction": evaluation.cost,
        "rise": evaluation.quality_loss,
        "frechet_distance": evaluation.figures["frechet_distance"],
        "frechet_distance_uncached": evaluation.figures["frechet_distance_uncached"],
    }


def compare(model: str, front_folder: Path, per_digit: int, threads: int) -> list[dict[str, Any]]:
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
        seed=FRESH_SEED,
    )
    evaluator = Evaluator(spec, settings)
    check = pixel_classifier()
    labels = torch.arange(NUM_DIGITS).repeat_interleave(per_digit)
    rows = []
    for n in FORA_N:
        baseline = fora(evaluator.template.groups, evaluator.template.num_steps, n)
        theirs = evaluator.evaluate(baseline)
        chosen = rival(front, theirs.cost)
        ours = evaluator.evaluate(chosen)
        difference = paired_difference([1 - s for s in theirs.prompt_scores], [1 - s for s in ours.prompt_scores])
        images, _ = evaluator.generate(chosen)
        rows.append(
            {
                "baseline": f"fora-{n}",
                "fora": figures(theirs),
                "rival": {**figures(ours), "provenance": chosen.provenance},
                "difference": {"mean": difference.mean, "low": difference.low, "high": difference.high},
                "relative": {
                    key: value / theirs.quality_loss
                    for key, value in (("mean", difference.mean), ("low", difference.low), ("high", difference.high))
                },
                "rival_pixel_check_accuracy": pixel_accuracy(check, images, labels),
            }
        )
    return rows


def show(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Fréchet rise over uncached on fresh images (lower is better)")
    for column in ("baseline", "MACs", "rival MACs", "FD: FORA", "rival", "uncached", "better by [95 % CI]", "check"):
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
            f"{row['rival_pixel_check_accuracy']:.1%}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--front", type=Path, required=True, help="RUN/front folder of a frechet search")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--per-digit", type=int, default=50, help="fresh seeds per digit")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    rows = compare(args.model, args.front, args.per_digit, args.threads)
    show(rows, Console(width=100))
    if args.out:
        record = {"per_digit": args.per_digit, "seed": FRESH_SEED, "rows": rows}
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
