"""Measure the digits model uncached: prompted-class accuracy, reward and Fréchet distance per guidance.

Accuracy is read twice: by the bundled CNN classifier (whose probability is the `reward` metric and whose
features give the Fréchet distance) and by an independent check that shares nothing with any search
objective, a support-vector classifier on raw pixels fitted to the same training split.

    python -m ecad_search.models.digits.evaluate            # bundled model, 50 samples per digit, 20 steps
    python -m ecad_search.models.digits.evaluate --model out/digits --guidance 1 2 3
    python -m ecad_search.models.digits.evaluate --guidance 1.25 --schedule runs/RUN/front/rank03-X.json

Every guidance scale starts from the same initial noise (one seeded generator per scale), so the rows differ
only by the guidance. The chosen default is the scale with the lowest Fréchet distance among those whose
accuracy is within `--tolerance` of the best: accuracy is what the quality loss of a schedule is measured by,
and among equally accurate settings the one closest to real digits (least over-saturated) is preferred.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from sklearn.svm import SVC

from ...formats import load_schedule
from ...metrics.frechet import digits_frechet_distance, digits_frechet_floor
from ...metrics.reward import (
    DigitClassifier,
    digit_accuracy,
    digit_reward,
    digits_split,
    load_digit_classifier,
    load_real_digits,
    pipeline_classifier,
)
from ...runtime import apply_schedule
from . import ASSETS_DIR, DIGIT_PROMPTS, NUM_DIGITS
from .pipeline import DigitsPipeline

GUIDANCE_SCALES = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0)


def sample_digits(
    pipe: DigitsPipeline, guidance_scale: float, per_digit: int = 50, steps: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_digit` uncached samples of each digit: images (N,1,8,8) in [0,1] and prompted labels (N,)."""
    generator = torch.Generator().manual_seed(seed)
    images = pipe(
        DIGIT_PROMPTS,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        num_images_per_prompt=per_digit,
        generator=generator,
        output_type="pt",
    ).images
    return images.cpu(), torch.arange(NUM_DIGITS).repeat_interleave(per_digit)


def pixel_classifier() -> SVC:
    """The independent check: an RBF support-vector classifier on the 64 raw pixels of the training split."""
    images, labels = load_real_digits()
    train, _ = digits_split()
    return SVC(gamma=0.05, C=10.0).fit(images[train].flatten(1).numpy(), labels[train].numpy())


def pixel_accuracy(check: SVC, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images the pixel classifier reads as the prompted digit."""
    return float((check.predict(images.flatten(1).numpy()) == labels.numpy()).mean())


def evaluate_guidance(
    pipe: DigitsPipeline,
    classifier: DigitClassifier,
    guidance_scales: tuple[float, ...] = GUIDANCE_SCALES,
    per_digit: int = 50,
    steps: int = 20,
    seed: int = 0,
) -> list[dict[str, float]]:
    """One row per guidance scale: accuracy (argmax == prompt), mean reward, Fréchet distance to real."""
    rows = []
    check = pixel_classifier()
    for scale in guidance_scales:
        images, labels = sample_digits(pipe, scale, per_digit, steps, seed)
        reward = digit_reward(classifier, images, labels)
        rows.append(
            {
                "guidance": float(scale),
                "accuracy": digit_accuracy(classifier, images, labels),
                "pixel_check_accuracy": pixel_accuracy(check, images, labels),
                "mean_reward": reward.mean().item(),
                "frechet": digits_frechet_distance(classifier, images),
            }
        )
    return rows


def choose_guidance(rows: list[dict[str, float]], tolerance: float = 0.01) -> float:
    """Lowest-Fréchet scale among those within `tolerance` of the best accuracy."""
    best = max(row["accuracy"] for row in rows)
    candidates = [row for row in rows if row["accuracy"] >= best - tolerance]
    return min(candidates, key=lambda row: row["frechet"])["guidance"]


def format_table(rows: list[dict[str, float]], floor: float, chosen: float) -> str:
    """A plain-text table of the sweep, with the real-digit Fréchet floor and the chosen scale."""
    lines = [f"{'guidance':>8}  {'accuracy':>8}  {'check':>6}  {'reward':>6}  {'Fréchet':>7}"]
    for row in rows:
        mark = "  <- default" if row["guidance"] == chosen else ""
        lines.append(
            f"{row['guidance']:>8.2f}  {row['accuracy']:>8.1%}  {row['pixel_check_accuracy']:>6.1%}  "
            f"{row['mean_reward']:>6.3f}  "
            f"{row['frechet']:>7.3f}{mark}"
        )
    lines.append(f"Fréchet floor (held-out real digits vs the rest): {floor:.3f}")
    return "\n".join(lines)


def evaluation_record(
    pipe: DigitsPipeline,
    classifier: DigitClassifier,
    guidance_scales: tuple[float, ...] = GUIDANCE_SCALES,
    per_digit: int = 50,
    steps: int = 20,
    seed: int = 0,
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """The sweep, the Fréchet floor and the chosen guidance, as stored in training.json."""
    rows = evaluate_guidance(pipe, classifier, guidance_scales, per_digit, steps, seed)
    return {
        "evaluation": {
            "sampler": type(pipe.scheduler).__name__,
            "per_digit": per_digit,
            "steps": steps,
            "seed": seed,
            "rows": rows,
        },
        "frechet_floor": digits_frechet_floor(classifier),
        "chosen_guidance": choose_guidance(rows, tolerance),
    }


def update_training_record(model: Path, fields: dict[str, Any]) -> None:
    """Merge fields into <model>/training.json, e.g. a new sweep after the sampler changed."""
    path = model / "training.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**record, **fields}, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ASSETS_DIR, help="pipeline folder (default: bundled)")
    parser.add_argument("--classifier", type=Path, default=None, help="default: <model>/classifier or bundled")
    parser.add_argument("--guidance", type=float, nargs="+", default=list(GUIDANCE_SCALES))
    parser.add_argument("--per-digit", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.01, help="accuracy slack when choosing guidance")
    parser.add_argument("--record", action="store_true", help="store the sweep in <model>/training.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--schedule", type=Path, help="sample with this cache schedule (default: uncached)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = DigitsPipeline.from_pretrained(args.model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_digit_classifier(args.classifier) if args.classifier else pipeline_classifier(args.model)
    if args.schedule is not None:
        if args.record:
            raise SystemExit("--record stores the uncached model's figures: leave out --schedule")
        apply_schedule(pipe, load_schedule(args.schedule))
    fields = evaluation_record(
        pipe, classifier, tuple(args.guidance), args.per_digit, args.steps, args.seed, args.tolerance
    )
    print(format_table(fields["evaluation"]["rows"], fields["frechet_floor"], fields["chosen_guidance"]))
    if args.record:
        update_training_record(args.model, fields)
    return fields


if __name__ == "__main__":
    main()
