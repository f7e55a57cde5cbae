"""Compare NSGA-II presets on the digits model at equal numbers of generated images.

Each preset (and each candidate operator setting, to choose our default by measurement) runs the real search
on its own fresh database, so no preset profits from another's memo. After every generation it records the
archive's hypervolume and the images generated so far; the curves of all presets go into one PNG. It also
reports the share of search time spent outside image generation: the overhead that resident workers must
remove.

    python scripts/bench_search.py --images 12000 --seeds 0 1 --out docs/bench_search.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from ecad_search.pool import LocalPool
from ecad_search.search.presets import PRESETS, Preset
from ecad_search.search.runner import SearchConfig, SearchRun, prepare

CANDIDATES = {
    "ecad": PRESETS["ecad"],
    "default": PRESETS["default"],
    "uniform-4flips": replace(
        PRESETS["default"], name="uniform-4flips", crossover="uniform", mutation_prob=1.0, flips_per_offspring=4.0
    ),
    "points-1flip": replace(PRESETS["default"], name="points-1flip", mutation_prob=1.0, flips_per_offspring=1.0),
    "points-4flips": replace(PRESETS["default"], name="points-4flips", mutation_prob=1.0, flips_per_offspring=4.0),
    "points-12flips": replace(PRESETS["default"], name="points-12flips", mutation_prob=1.0, flips_per_offspring=12.0),
    "no-refine": replace(PRESETS["default"], name="no-refine", refine_share=0.0),
    "refine-half": replace(PRESETS["default"], name="refine-half", refine_share=1 / 2),
}


def run_preset(preset: Preset, seed: int, images: int, pool: LocalPool, base: SearchConfig, folder: Path) -> dict:
    """One search until `images` images were generated; the curve and the time split."""
    config = replace(
        base, preset="default", population=preset.population, seed=seed,
        db=f"sqlite:///{folder / f'{preset.name}-{seed}.db'}", out=str(folder / "out"), run=f"{preset.name}-{seed}",
    )  # fmt: skip
    search_run = SearchRun(prepare(config), Console(quiet=True), pool=pool, preset=preset)
    search_run.evaluate_baselines()
    per_eval = search_run.prepared.settings.num_images
    curve, generated, generating, start, index = [], 0, 0.0, time.perf_counter(), 0
    while generated < images:
        report = search_run.search.step(index)
        new = [search_run.search.state.records[d] for d in list(search_run.search.state.records)[-report.evaluated :]]
        generating += sum((r.latency_s or 0.0) * per_eval for r in new) if report.evaluated else 0.0
        generated += report.evaluated * per_eval
        beaten = sum(
            c.rival is not None and c.rival_loss < c.baseline.quality_loss for c in search_run.versus_baselines()
        )
        curve.append((generated, report.hypervolume, beaten))
        index += 1
    total = time.perf_counter() - start
    return {"curve": curve, "total_s": total, "generating_s": generating, "generations": index}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--metric", default="fidelity", help="the objective the presets were compared on")
    parser.add_argument("--images", type=int, default=12000, help="images generated per preset and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--presets", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", type=Path, default=Path("bench_search.png"))
    args = parser.parse_args()
    base = SearchConfig(model=args.model, generations=1, metric=args.metric, guard="both")
    prepared = prepare(base)
    pool = LocalPool(prepared.spec)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            results[name] = [
                run_preset(CANDIDATES[name], seed, args.images, pool, base, Path(tmp)) for seed in args.seeds
            ]
    plot(results, args.out)
    args.out.with_suffix(".json").write_text(json.dumps({"images": args.images, "results": results}, indent=1))
    report(results, args.images)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for index, (name, runs) in enumerate(results.items()):
        for k, run in enumerate(runs):
            xs, ys, _ = zip(*run["curve"], strict=True)
            ax.plot(xs, ys, color=f"C{index}", alpha=0.85, label=name if k == 0 else None, marker=".", ms=3)
    ax.set_xlabel("images generated")
    ax.set_ylabel("hypervolume of the archive (ref. point: loss 1, MACs 1)")
    ax.set_title("NSGA-II presets on the digits model, equal image budgets", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def hypervolume_at(curve: list[tuple[int, float, int]], images: int) -> float:
    """The archive's hypervolume once `images` images were spent (the last generation within the budget)."""
    return max((hv for generated, hv, _ in curve if generated <= images), default=0.0)


def baselines_beaten_at(curve: list[tuple[int, float, int]], images: int) -> int:
    """How many FORA baselines a searched front schedule beats on the calibration images (no held-out split
    here: this compares presets, not claims) once `images` images were spent."""
    return max((beaten for generated, _, beaten in curve if generated <= images), default=0)


def report(results: dict[str, list[dict]], images: int) -> None:
    table = Table(title=f"hypervolume after {images} images (per seed), and where the time went")
    columns = (
        "preset",
        "final HV per seed",
        "mean",
        "FORA beaten (calibration)",
        "generations",
        "search s",
        "outside generation",
    )
    for column in columns:
        table.add_column(column)
    for name, runs in results.items():
        finals = [hypervolume_at(run["curve"], images) for run in runs]
        total = sum(run["total_s"] for run in runs)
        generating = sum(run["generating_s"] for run in runs)
        table.add_row(
            name,
            " ".join(f"{v:.4f}" for v in finals),
            f"{sum(finals) / len(finals):.4f}",
            " ".join(str(baselines_beaten_at(run["curve"], images)) for run in runs),
            " ".join(str(run["generations"]) for run in runs),
            f"{total:.0f}",
            f"{1 - generating / total:.1%}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
