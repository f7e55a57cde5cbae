"""Every online policy at its default knobs on one model: the MACs it saved (what it ran, its own arithmetic
included), and PSNR and SSIM of its images to the uncached images of the same seeds, beside FORA at the
nearest MACs.

Each policy that needs a calibration table is calibrated first on the model's calibration prompts (stored
in the user cache folder and reused). Images are the model's calibration prompts × `--seeds` seeds (digits:
10 prompts × 3 seeds = 30 images), in one pipeline call per prompt set, as the evaluator generates them.

    python -m benchmarks.policies --out docs/bench_policies_digits
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from rich.console import Console
from rich.table import Table

from ecad_search.evaluation import EvaluationSettings, Evaluator
from ecad_search.families import PSNR_CAP_DB
from ecad_search.files import save_figure
from ecad_search.heuristics import fora
from ecad_search.metrics.fidelity import psnr, ssim
from ecad_search.models import block_groups, get_model
from ecad_search.policies import policy_config, policy_names
from ecad_search.prompts import default_prompt_file, load_prompts

from .common import parser as common_parser
from .common import write_json

FORA_INTERVALS = range(2, 11)


def fidelity(images: torch.Tensor, references: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR (dB; an image identical to its reference counts as 100 dB rather than infinity) and SSIM of
    the images to the uncached images of the same seeds."""
    return float(psnr(images, references).clamp(max=PSNR_CAP_DB).mean()), float(ssim(images, references).mean())


def measure(model: str, seeds: int) -> dict[str, Any]:
    spec = get_model(model)
    prompts = load_prompts(default_prompt_file(spec.family))
    settings = EvaluationSettings(
        model, "fidelity", prompts, seeds, spec.default_steps, spec.guidance_scale, spec.resolution, batch_size=0
    )
    evaluator = Evaluator(spec, settings)
    references = evaluator.references
    assert references is not None, "the fidelity metric generates the uncached references"
    rows = []
    for name in policy_names():
        config = evaluator.calibrated(policy_config(name))
        images, seconds, macs, realised = evaluator.generate_with_policy(config)
        steps = [float(mask.compute_fraction) for mask in realised]
        rows.append(
            {
                "policy": name,
                "knobs": {k: v for k, v in config.knobs().items() if k not in ("table", "ratios", "coefficients")},
                "macs_fraction": macs / evaluator.full_macs,
                "components_computed": sum(steps) / len(steps),
                "seconds": seconds,
                **dict(zip(("psnr", "ssim"), fidelity(images, references), strict=True)),
            }
        )
    baselines = []
    for n in FORA_INTERVALS:
        schedule = fora(block_groups(spec), settings.steps, n)
        images, _ = evaluator.generate(schedule)
        quality = fidelity(images, references)
        baselines.append({"fora": n, "macs_fraction": evaluator.macs(schedule) / evaluator.full_macs,
                          "psnr": quality[0], "ssim": quality[1]})  # fmt: skip
    for row in rows:
        nearest = min(baselines, key=lambda b: abs(b["macs_fraction"] - row["macs_fraction"]))
        row["fora_nearest"] = nearest
    return {"model": model, "images": len(prompts) * seeds, "steps": settings.steps, "policies": rows,
            "fora": baselines}  # fmt: skip


def report(result: dict[str, Any]) -> None:
    console = Console(width=80)
    table = Table(
        "policy", "MACs saved", "PSNR", "SSIM", "FORA", "saved", "PSNR", "SSIM",
        title=f"{result['model']}: {result['images']} images, {result['steps']} steps, default knobs",
    )  # fmt: skip
    for row in result["policies"]:
        near = row["fora_nearest"]
        table.add_row(
            row["policy"],
            f"{1 - row['macs_fraction']:.1%}",
            f"{row['psnr']:.2f}",
            f"{row['ssim']:.4f}",
            f"FORA-{near['fora']}",
            f"{1 - near['macs_fraction']:.1%}",
            f"{near['psnr']:.2f}",
            f"{near['ssim']:.4f}",
        )
    console.print(table)


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    fora_rows = result["fora"]
    ax.plot([1 - b["macs_fraction"] for b in fora_rows], [b["psnr"] for b in fora_rows], "o-", color="grey",
            label="FORA-2…10")  # fmt: skip
    for b in fora_rows:
        ax.annotate(str(b["fora"]), (1 - b["macs_fraction"], b["psnr"]), fontsize=7, color="grey")
    markers = "sDv^<>pP*XhH"
    for index, row in enumerate(result["policies"]):
        if row["psnr"] >= PSNR_CAP_DB:  # identical to uncached: it saved nothing, and would squash the axis
            ax.annotate(f"{row['policy']}: no step saved", (0.01, 0.02 + 0.05 * index), xycoords="axes fraction")
            continue
        ax.plot(1 - row["macs_fraction"], row["psnr"], markers[index % len(markers)], color=f"C{index % 10}",
                markersize=8, label=row["policy"])  # fmt: skip
    ax.set_xlabel("MACs saved (what ran, overhead included)")
    ax.set_ylabel("PSNR to uncached (dB)")
    ax.set_title(f"{result['model']}: online policies at default knobs, {result['images']} images")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per calibration prompt")
    parser.add_argument("--out", type=Path, default=Path("bench_policies"), help="writes OUT.json and OUT.png")
    args = parser.parse_args(argv)
    result = measure(args.model, args.seeds)
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), result)
    plot(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
