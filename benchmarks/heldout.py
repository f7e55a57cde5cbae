"""How many calibration images make a search's ranking trustworthy on images it never saw?

The candidates are those the front refinement compares: each FORA-N baseline and random one-move neighbours of
it (a step shift or a dropped computation), whose true losses differ by a few percent. Each candidate is
scored once on P prompts × S seeds (per image, common random numbers); the first seeds serve as calibration
sets of growing size, the last half as the held-out set. For each calibration size the script reports:

- the Spearman rank correlation between calibration and held-out losses within each neighbourhood;
- the standard error of a paired loss difference (neighbour − its FORA parent), over prompts and over images,
  and the root-mean-square gap between that difference on the calibration and on the held-out images;
- selection bias: the gain over FORA that the neighbour with the best calibration loss claims, and the
  gain it has on the held-out seeds;
- the selection-bias guards, replayed on the same scores: with no guard the best calibration loss replaces
  FORA; with `confirm` every candidate that beats FORA on calibration is scored again on as many fresh seeds
  and the best pooled loss wins; with `paired test` the best calibration loss wins only when its paired
  interval against FORA excludes zero. For each: the held-out gain of what was chosen, how often it is
  worse than FORA on held-out images, and the images spent per neighbourhood.

    python -m benchmarks.heldout --model digits --seeds 32 --neighbours 15 --out docs/bench_heldout_digits
    python -m benchmarks.heldout --model tiny-pixart --seeds 32 --neighbours 15 --out docs/bench_heldout_tiny
    python -m benchmarks.heldout --analyse docs/bench_heldout_digits.json docs/bench_heldout_tiny.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from .common import parser as common_parser
from .common import write_json

CALIBRATION_SEEDS = (1, 2, 4, 8, 16)
FORA_PARENTS = (2, 3, 4, 5)


def model_and_prompts(name: str, prompt_count: int) -> tuple[str, list[str]]:
    """A registry model (digits: one prompt per digit), or the 28-block tiny PixArt saved to a temporary folder."""
    if name == "digits":
        return "digits", [f"a handwritten digit {d}" for d in range(10)][:prompt_count]
    from ecad_search.prompts import default_prompt_file, load_prompts
    from ecad_search.testing import save_tiny, tiny_pixart_pipeline

    folder = save_tiny(tiny_pixart_pipeline(num_layers=28, seed=0), Path(tempfile.mkdtemp()) / "tiny-pixart")
    return str(folder), list(load_prompts(default_prompt_file("pixart")))[:prompt_count]


def measure(model: str, prompt_count: int, seeds: int, neighbours: int, rng_seed: int) -> dict:
    """Per-image fidelity scores (prompts × seeds) of each FORA parent and its neighbours."""
    from ecad_search.evaluation import EvaluationSettings, Evaluator
    from ecad_search.models import get_model
    from ecad_search.search.operators import front_neighbours
    from ecad_search.search.seeding import fora_reference

    path, prompts = model_and_prompts(model, prompt_count)
    spec = get_model(path)
    settings = EvaluationSettings(
        model=spec.name,
        metric="fidelity",
        prompts=tuple(prompts),
        images_per_prompt=seeds,
        steps=spec.default_steps,
        guidance_scale=spec.guidance_scale,
        resolution=spec.resolution,
    )
    evaluator = Evaluator(spec, settings)
    parents = {s.name: s for s in fora_reference(evaluator.template) if int(s.name.split("-")[1]) in FORA_PARENTS}
    rng = np.random.default_rng(rng_seed)
    seen = {s.genome().tobytes() for s in parents.values()}
    candidates = []
    start = time.perf_counter()
    for name, parent in parents.items():
        genomes = [parent.genome()] + [
            g for _, g in front_neighbours([parent.genome()] * neighbours, neighbours, parent.genes_per_step, rng, seen)
        ]
        for index, genome in enumerate(genomes):
            schedule = evaluator.template.with_genome(genome)
            images, _ = evaluator.generate(schedule)
            scores = evaluator.metric.score(images, evaluator.image_prompts, evaluator.references)
            candidates.append(
                {
                    "family": name,
                    "is_parent": index == 0,
                    "macs_fraction": evaluator.macs(schedule) / evaluator.full_macs,
                    "scores": scores.double().view(len(prompts), seeds).tolist(),
                }
            )
    return {
        "model": model,
        "prompts": prompts,
        "seeds": seeds,
        "seconds": time.perf_counter() - start,
        "candidates": candidates,
    }


def analyse(data: dict) -> list[dict]:
    """One row per calibration size: rank correlation, paired standard error, claimed and held-out gains."""
    seeds = data["seeds"]
    held_out = slice(seeds // 2, seeds)
    families: dict[str, list[dict]] = {}
    for candidate in data["candidates"]:
        families.setdefault(candidate["family"], []).append(candidate)
    rows = []
    for n in (s for s in CALIBRATION_SEEDS if s <= seeds // 2):
        correlations, errors, image_errors, gaps, claimed, real, spreads = [], [], [], [], [], [], []
        for members in families.values():
            parent = next(m for m in members if m["is_parent"])
            scores = {id(m): np.array(m["scores"]) for m in members}
            cal = {id(m): 1 - scores[id(m)][:, :n].mean() for m in members}
            out = {id(m): 1 - scores[id(m)][:, held_out].mean() for m in members}
            keys = [id(m) for m in members]
            correlations.append(spearmanr([cal[k] for k in keys], [out[k] for k in keys]).statistic)
            for m in members:
                if m is parent:
                    continue
                per_image = scores[id(parent)][:, :n] - scores[id(m)][:, :n]
                per_prompt = per_image.mean(axis=1)
                errors.append(per_prompt.std(ddof=1) / np.sqrt(len(per_prompt)) / cal[id(parent)])
                if per_image.size > 1:
                    image_errors.append(per_image.std(ddof=1) / np.sqrt(per_image.size) / cal[id(parent)])
                held_out_gap = (scores[id(parent)][:, held_out] - scores[id(m)][:, held_out]).mean()
                gaps.append((per_image.mean() - held_out_gap) / out[id(parent)])
                spreads.append(abs(out[id(m)] - out[id(parent)]) / out[id(parent)])
            rivals = [m for m in members if m is not parent and m["macs_fraction"] <= parent["macs_fraction"] + 1e-9]
            best = min(rivals, key=lambda m: cal[id(m)])
            claimed.append((cal[id(parent)] - cal[id(best)]) / cal[id(parent)])
            real.append((out[id(parent)] - out[id(best)]) / out[id(parent)])
        rows.append(
            {
                "images": n * len(data["prompts"]),
                "seeds": n,
                "spearman": float(np.mean(correlations)),
                "paired_se": float(np.median(errors)),
                "paired_se_images": float(np.median(image_errors)) if image_errors else float("nan"),
                "rms_gap": float(np.sqrt(np.mean(np.square(gaps)))),
                "claimed_gain": float(np.mean(claimed)),
                "held_out_gain": float(np.mean(real)),
                "true_spread": float(np.median(spreads)),
            }
        )
    return rows


def replay_guards(
    members: list[dict], calibration: np.ndarray, confirmation: np.ndarray, held_out: slice
) -> dict[str, tuple[float, int]]:
    """What each guard chooses in one neighbourhood: (held-out gain over FORA, images spent)."""
    from ecad_search.verdict import paired_difference

    parent = next(m for m in members if m["is_parent"])
    rivals = [m for m in members if m is not parent and m["macs_fraction"] <= parent["macs_fraction"] + 1e-9]
    scores = {id(m): np.array(m["scores"]) for m in members}
    prompts = scores[id(parent)].shape[0]

    def loss(m: dict, seeds_used: slice | np.ndarray) -> float:
        return 1 - scores[id(m)][:, seeds_used].mean()

    def gain(chosen: dict) -> float:
        return (loss(parent, held_out) - loss(chosen, held_out)) / loss(parent, held_out)

    n = len(calibration)
    pooled = np.concatenate([calibration, confirmation])
    spent = (len(rivals) + 1) * n * prompts
    best = min([parent, *rivals], key=lambda m: loss(m, calibration))
    entrants = [m for m in rivals if loss(m, calibration) < loss(parent, calibration)]
    confirmed = min([parent, *entrants], key=lambda m: loss(m, pooled))
    test = paired_difference(
        scores[id(best)][:, calibration].mean(axis=1), scores[id(parent)][:, calibration].mean(axis=1)
    )
    return {
        "none": (gain(best), spent),
        "confirm": (gain(confirmed), spent + (len(entrants) + 1) * n * prompts),
        "paired test": (gain(best) if test.verdict > 0 else 0.0, spent),
    }


def guards(data: dict, replicates: int = 200, rivals: int = 10) -> list[dict]:
    """The guards replayed on many virtual searches: in each, a neighbourhood is FORA-N with `rivals` of its
    measured neighbours drawn at random, and the calibration and confirmation seeds are drawn from the first
    half (the held-out half stays fixed), for each calibration size that leaves room for both."""
    seeds = data["seeds"]
    held_out = slice(seeds // 2, seeds)
    families: dict[str, list[dict]] = {}
    for candidate in data["candidates"]:
        families.setdefault(candidate["family"], []).append(candidate)
    rng = np.random.default_rng(0)
    rows = []
    for n in (s for s in CALIBRATION_SEEDS if 2 * s <= seeds // 2):
        outcomes = []
        for members in families.values():
            parent = next(m for m in members if m["is_parent"])
            others = [m for m in members if m is not parent]
            for _ in range(replicates):
                drawn = [others[i] for i in rng.choice(len(others), size=min(rivals, len(others)), replace=False)]
                order = rng.permutation(seeds // 2)
                outcomes.append(replay_guards([parent, *drawn], order[:n], order[n : 2 * n], held_out))
        for guard in outcomes[0]:
            gains = np.array([o[guard][0] for o in outcomes])
            rows.append(
                {
                    "seeds": n,
                    "guard": guard,
                    "held_out_gain": float(gains.mean()),
                    "worse_than_fora": float((gains < 0).mean()),
                    "images": float(np.mean([o[guard][1] for o in outcomes])),
                }
            )
    return rows


def report(datasets: list[dict], plot: Path | None) -> None:
    console = Console()
    for data in datasets:
        table = Table(title=f"{Path(data['model']).name}: {len(data['prompts'])} prompts, held-out seeds "
                      f"{data['seeds'] // 2}..{data['seeds'] - 1}")  # fmt: skip
        columns = ("seeds", "images", "ρ", "SE prompts", "SE images", "rms gap", "claimed", "held out")
        for column in columns:
            table.add_column(column, justify="right")
        for row in analyse(data):
            table.add_row(
                str(row["seeds"]),
                str(row["images"]),
                f"{row['spearman']:.2f}",
                f"{row['paired_se']:.1%}",
                f"{row['paired_se_images']:.1%}",
                f"{row['rms_gap']:.1%}",
                f"{row['claimed_gain']:+.1%}",
                f"{row['held_out_gain']:+.1%}",
            )
        console.print(table)
        console.print(f"median |held-out difference| neighbour vs FORA parent: {analyse(data)[0]['true_spread']:.1%}")
        table = Table(title=f"{Path(data['model']).name}: selection-bias guards")
        for column in ("seeds", "guard", "held-out gain", "worse than FORA", "images per neighbourhood"):
            table.add_column(column, justify="right")
        for row in guards(data):
            table.add_row(
                str(row["seeds"]),
                row["guard"],
                f"{row['held_out_gain']:+.2%}",
                f"{row['worse_than_fora']:.0%}",
                f"{row['images']:.0f}",
            )
        console.print(table)
    if plot:
        draw(datasets, plot)


def draw(datasets: list[dict], path: Path) -> None:
    """Rank correlation, claimed against held-out gain, and how often each guard's choice loses to FORA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6))
    for color, data in zip(("tab:blue", "tab:orange"), datasets, strict=False):
        rows = analyse(data)
        label = Path(data["model"]).name
        images = [r["images"] for r in rows]
        left.plot(images, [r["spearman"] for r in rows], marker="o", c=color, label=label)
        middle.plot(
            images, [100 * r["claimed_gain"] for r in rows], marker="o", ls="--", c=color, label=f"{label}: claimed"
        )
        middle.plot(images, [100 * r["held_out_gain"] for r in rows], marker="o", c=color, label=f"{label}: held out")
    first = datasets[0]
    replayed = guards(first)
    for guard in dict.fromkeys(r["guard"] for r in replayed):
        rows = [r for r in replayed if r["guard"] == guard]
        right.plot(
            [r["seeds"] * len(first["prompts"]) for r in rows],
            [100 * r["worse_than_fora"] for r in rows],
            marker="o",
            label=guard,
        )
    left.set(xscale="log", xlabel="calibration images per candidate", ylabel="Spearman ρ, calibration vs held out")
    middle.set(xscale="log", xlabel="calibration images per candidate", ylabel="best neighbour's gain over FORA (%)")
    right.set(
        xscale="log",
        xlabel="calibration images per candidate",
        ylabel="choices worse than FORA, held out (%)",
        title=f"guards on {Path(first['model']).name}",
    )
    sizes = sorted({r["seeds"] * len(first["prompts"]) for r in replayed})
    right.set_xticks(sizes, [str(size) for size in sizes])
    right.minorticks_off()
    middle.axhline(0, c="0.5", lw=0.8)
    for ax in (left, middle, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits", help="digits or tiny-pixart")
    parser.add_argument("--prompts", type=int, default=16, help="prompts (digits has 10)")
    parser.add_argument("--seeds", type=int, default=32, help="seeds per prompt; the last half is held out")
    parser.add_argument("--neighbours", type=int, default=15, help="one-move neighbours per FORA parent")
    parser.add_argument("--seed", type=int, default=0, help="seed of the neighbour moves")
    parser.add_argument("--out", type=Path, help="write OUT.json (scores) and OUT.png")
    parser.add_argument("--analyse", type=Path, nargs="+", help="only analyse stored JSON files")
    parser.add_argument("--plot", type=Path, help="with --analyse: the PNG to draw")
    args = parser.parse_args(argv)
    if args.analyse:
        report([json.loads(p.read_text()) for p in args.analyse], args.plot)
        return
    data = measure(args.model, args.prompts, args.seeds, args.neighbours, args.seed)
    if args.out:
        write_json(args.out.with_suffix(".json"), data)
    report([data], args.out.with_suffix(".png") if args.out else None)


if __name__ == "__main__":
    main()
