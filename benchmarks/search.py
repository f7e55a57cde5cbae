"""How many generated images each search setting needs to reach the front of a long `ecad` run, on held-out
images.

Every setting (an NSGA-II preset, or one lever switched off) runs the real search, seed by seed, each on its
own fresh database, so no setting profits from another's memo; every image it generates counts (the FORA
baselines, calibration and confirmation). After each generation the archive's front is kept. Then every
front ever kept, and the hand-made schedules the searches start from, are scored on the held-out split (a
measurement, not counted; one shared database, so a schedule is scored once), and:

- a setting may also be a front made of budget searches (`--budget` at 50, 35, 25 and 20 % MACs in turn, on
  one database, so the FORA starts are scored once): `budgets` is ours, `budcache` the BudCache-style search
  on whole steps (the baseline of `benchmarks/budget.py`); its front after each budget is the non-dominated set of
  what the searches found and the FORA-N they scored;
- the reference front is the non-dominated union of the final fronts of the `--reference` setting's runs
  (the `ecad` preset, run `--reference-images` images per seed);
- progress = (HV − HV of the hand-made schedules) / (HV of the reference − HV of the hand-made schedules),
  so that the seeded first population does not count as search; on the recorded losses, and on a log scale
  (log of the loss above a floor just under every held-out loss seen), where the low-loss end counts;
- each run reports the images it generated to reach 90, 95 and 99 % progress, its held-out loss at 50, 35, 25 and 20 %
  MACs against the best FORA-N there, and its wall time.

One PNG shows progress against images for every run.

    python -m benchmarks.search --settings ecad default no-screen --seeds 0 1 2 --out docs/bench_search
    python -m benchmarks.search --model TINY_FOLDER --metric fidelity --steps 20 --out docs/bench_search_tiny
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.compare.budgets import Point, hypervolume, pareto
from ecad_search.evaluation import run_template, schedule_macs
from ecad_search.heuristics import all_heuristics, fora
from ecad_search.pool import LocalPool, genome_bits, genome_text
from ecad_search.search.budget import BudgetPlan, Moves
from ecad_search.search.budget_run import search_at_budget
from ecad_search.search.prepared import PreparedSearch
from ecad_search.search.presets import PRESETS, Preset
from ecad_search.search.run import SearchRun
from ecad_search.search.splits import SplitScorer
from ecad_search.store import Store

from .common import parser as common_parser
from .common import write_json

SETTINGS = {
    "ecad": PRESETS["ecad"],
    "default": PRESETS["default"],
    "fast": PRESETS["fast"],
    "no-screen": replace(PRESETS["default"], name="no-screen", screen=1),
    "screen-8": replace(PRESETS["default"], name="screen-8", screen=8),
    "population-12": replace(PRESETS["default"], name="population-12", population=12),
    "no-refine": replace(PRESETS["default"], name="no-refine", refine_share=0.0),
    "race": replace(PRESETS["default"], name="race", race=0.25),
    "fast-8": replace(PRESETS["fast"], name="fast-8", population=8),
}
# ECAD scores every candidate once on its calibration images; our settings run with the model's guard, and as
# "<setting>-paired" with the paired test alone (no confirmation images).
PAIRED = ("population-12", "fast", "fast-8")
SETTINGS.update({f"{name}-paired": replace(SETTINGS[name], name=f"{name}-paired") for name in PAIRED})
GUARDS = {"ecad": "none", **{f"{name}-paired": "paired" for name in PAIRED}}
BUDGETS = (0.5, 0.35, 0.25, 0.2)
TARGETS = (0.9, 0.95, 0.99)
# Fronts made of one budget search per budget of BUDGETS: (plan, whole steps). Ours is `--budget`'s default
# (racing where the metric allows); BudCache anneals and climbs on whole steps and never races.
LADDERS = {"budgets": (BudgetPlan.of(48, race=0.25), Moves()), "budcache": (BudgetPlan.of(48), Moves(step_share=1.0))}


def run_setting(name: str, seed: int, images: int, pool: LocalPool, args: argparse.Namespace, folder: Path) -> dict:
    """One search until `images` images were generated: after each generation, the images so far and the
    front (digest → genome bits)."""
    if name in LADDERS:
        return run_ladder(name, seed, images, pool, args, folder)
    preset: Preset = SETTINGS[name]
    config = base_config(args, folder / f"{name}-{seed}.db", seed, GUARDS.get(name))
    config = replace(config, population=preset.population, run=f"{name}-{seed}", held_out_images_per_prompt=None)
    prepared = prepare(config)
    search_run = SearchRun(prepared, pool=pool, preset=preset)
    search_run.start()
    search_run.evaluate_baselines()
    search = search_run.search
    generated = len(search_run.baselines) * prepared.settings.num_images  # also when served from --work
    checkpoints, index, seconds = [], 0, 0.0
    while generated < images:
        report = search.step(index)  # a generation served from --work reports what it cost when it ran
        generated += report.images
        seconds += report.wall_time_s
        front = {p.digest: genome_text(search.schedule(p.genome)) for p in search.state.archive.front()}
        checkpoints.append({"images": generated, "seconds": seconds, "front": front})
        index += 1
    search_run.store.close()
    return {"setting": name, "seed": seed, "checkpoints": checkpoints}


def run_ladder(name: str, seed: int, images: int, pool: LocalPool, args: argparse.Namespace, folder: Path) -> dict:
    """Budget searches at each of BUDGETS that some FORA-N fits, in turn, on one fresh database, until `images`
    images were generated: after each, the images so far and the calibration front of what the searches found
    and the FORA-N they scored."""
    plan, moves = LADDERS[name]
    config = replace(base_config(args, folder / f"{name}-{seed}.db", seed, None), run=f"{name}-{seed}")
    prepared = prepare(config)
    template = run_template(prepared.spec, prepared.settings)
    foras = [fora(template.groups, template.num_steps, n) for n in range(2, min(11, template.num_steps))]
    full = schedule_macs(template, prepared.spec, prepared.settings)
    cheapest = min(schedule_macs(s, prepared.spec, prepared.settings) for s in foras) / full
    genomes = {s.digest(): s.genome() for s in foras}
    checkpoints, generated, seconds = [], 0, 0.0
    with Store(config.db) as store:
        for budget in (b for b in BUDGETS if b >= cheapest):
            if generated >= images:
                break
            start = time.perf_counter()
            run = search_at_budget(prepared, budget, pool, store, plan, moves=moves)
            seconds += time.perf_counter() - start
            generated += run.calibration_images
            genomes[run.outcome.schedule.digest()] = run.outcome.schedule.genome()
            scored = store.evaluations_for(prepared.settings.key(), sorted(genomes))
            front = pareto([Point("", "", r.digest, r.cost, r.quality_loss) for r in scored])
            bits = {p.digest: genome_text(template.with_genome(genomes[p.digest])) for p in front}
            checkpoints.append({"images": generated, "seconds": seconds, "front": bits})
    return {"setting": name, "seed": seed, "checkpoints": checkpoints}


def base_config(args: argparse.Namespace, db: Path, seed: int, guard: str | None) -> SearchRequest:
    return SearchRequest(
        model=args.model, generations=1, metric=args.metric, steps=args.steps, seed=seed, guard=guard,
        images_per_prompt=args.images_per_prompt, held_out_images_per_prompt=args.held_out_images_per_prompt,
        db=f"sqlite:///{db}", out=str(db.parent / "out"),
    )  # fmt: skip


class HeldOut:
    """Held-out points of schedules by digest, scored once on a shared database."""

    def __init__(self, prepared: PreparedSearch, pool: LocalPool, folder: Path) -> None:
        self.prepared = prepared
        self.template = run_template(prepared.spec, prepared.settings)
        self.full = schedule_macs(self.template, prepared.spec, prepared.settings)
        self.scorer = SplitScorer(prepared.splits.held_out, Store(f"sqlite:///{folder / 'held-out.db'}"), pool)
        self.points: dict[str, Point] = {}
        self.fora: set[str] = set()

    def score(self, genomes: list[np.ndarray]) -> list[Point]:
        """The held-out points of genomes (keyed by the digest the search gives them)."""
        schedules = {s.digest(): s for s in (self.template.with_genome(g) for g in genomes)}
        new = {d: s for d, s in schedules.items() if d not in self.points}
        for digest, record in self.scorer.scores(new).items():
            cost = schedule_macs(new[digest], self.prepared.spec, self.prepared.settings) / self.full
            self.points[digest] = Point("", "", digest, cost, record.quality_loss)
        return [self.points[d] for d in schedules if d in self.points]

    def hand_made(self) -> list[Point]:
        """What every search starts from: FORA every N and the other heuristics, each scored on held-out."""
        template = self.template
        foras = [fora(template.groups, template.num_steps, n) for n in range(2, min(11, template.num_steps))]
        self.fora = {template.with_genome(s.genome()).digest() for s in foras}
        return self.score([s.genome() for s in [*all_heuristics(template.groups, template.num_steps), *foras]])


def thinned(runs: list[dict], count: int) -> list[dict]:
    """Each run with at most `count` checkpoints, nearest to log-spaced image counts (always its last): every
    front kept costs held-out images to measure."""
    kept = []
    for run in runs:
        checkpoints = run["checkpoints"]
        images = np.array([c["images"] for c in checkpoints])
        grid = np.geomspace(images[0], images[-1], count)
        chosen = sorted({int(np.argmin(np.abs(np.log(images) - np.log(g)))) for g in grid} | {len(images) - 1})
        kept.append({**run, "checkpoints": [checkpoints[i] for i in chosen]})
    return kept


def progress_curves(runs: list[dict], held_out: HeldOut, reference: str) -> dict[str, Any]:
    """Progress of every run at each of its checkpoints, on the recorded loss and on a log scale."""
    seeds = held_out.hand_made()
    for run in runs:
        for checkpoint in run["checkpoints"]:
            held_out.score([genome_bits(bits) for bits in checkpoint["front"].values()])
    final = [held_out.points[d] for run in runs if run["setting"] == reference for d in run["checkpoints"][-1]["front"]]
    losses = [p.loss for p in held_out.points.values()]
    reference_loss = float(np.quantile(losses, 0.95))
    floor = min(losses) - 0.01 * (reference_loss - min(losses))
    scales = {"loss": lambda v: v, "log loss": lambda v: math.log(v - floor)}
    out: dict[str, Any] = {"reference_loss": reference_loss, "floor": floor, "scales": {}}
    for scale, transform in scales.items():

        def area(points: list[Point], transform: Any = transform) -> float:
            moved = [replace(p, loss=transform(p.loss)) for p in points]
            return hypervolume(pareto(moved), (1.0, transform(reference_loss)))

        start, goal = area(seeds), area(final)
        curves = []
        for run in runs:
            curve = []
            for checkpoint in run["checkpoints"]:
                points = [held_out.points[d] for d in checkpoint["front"] if d in held_out.points]
                curve.append((checkpoint["images"], (area(points) - start) / (goal - start)))
            curves.append({"setting": run["setting"], "seed": run["seed"], "curve": curve})
        out["scales"][scale] = {"seeds_hv": start, "reference_hv": goal, "curves": curves}
    return out


def images_to(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((images for images, progress in curve if progress >= target), None)


def median_images(curves: list[list[tuple[int, float]]], target: float) -> int | None:
    """The median over seeds of the images to `target`, when more than half the seeds reached it."""
    reached = sorted(r for r in (images_to(c, target) for c in curves) if r is not None)
    return reached[len(reached) // 2] if 2 * len(reached) > len(curves) else None


def _count(images: int | None) -> str:
    return "-" if images is None else f"{images:,}"


def against_fora(run: dict, held_out: HeldOut) -> dict[str, Any]:
    """At each budget: the final front's member within it with the least search loss is what the run would
    offer; its held-out loss beside the best held-out FORA-N within the budget."""
    front = [held_out.points[d] for d in run["checkpoints"][-1]["front"] if d in held_out.points]
    foras = [held_out.points[d] for d in held_out.fora if d in held_out.points]
    rows = {}
    for budget in BUDGETS:
        ours = [p for p in front if p.cost <= budget * 1.01]
        theirs = [p for p in foras if p.cost <= budget * 1.01]
        rows[f"{budget:.0%}"] = {
            "ours": min((p.loss for p in ours), default=None),
            "fora": min((p.loss for p in theirs), default=None),
        }
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--images-per-prompt", type=int, default=None)
    parser.add_argument("--held-out-images-per-prompt", type=int, default=None)
    parser.add_argument(
        "--settings", nargs="+", default=["ecad", "default", "no-screen"], choices=[*SETTINGS, *LADDERS]
    )
    parser.add_argument("--reference", default="ecad", choices=list(SETTINGS))
    parser.add_argument("--reference-images", type=int, default=30000, help="images per seed of the reference")
    parser.add_argument("--images", type=int, default=6000, help="images per seed of every other setting")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--checkpoints", type=int, default=12, help="fronts per run scored on held-out images")
    parser.add_argument("--out", type=Path, default=Path("bench_search"))
    parser.add_argument("--work", type=Path, default=None, help="keep the databases here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        prepared = prepare(base_config(args, folder / "held-out.db", 0, None))
        pool = LocalPool(prepared.spec, prepared.config.device)
        runs = []
        for name in dict.fromkeys([args.reference, *args.settings]):
            budget = args.reference_images if name == args.reference else args.images
            for seed in args.seeds:
                runs.append(run_setting(name, seed, budget, pool, args, folder))
                print(f"{name} seed {seed}: {runs[-1]['checkpoints'][-1]['images']:,} images", flush=True)
        held_out = HeldOut(prepared, pool, folder)
        runs = thinned(runs, args.checkpoints)
        curves = progress_curves(runs, held_out, args.reference)
        versus = {f"{r['setting']}-{r['seed']}": against_fora(r, held_out) for r in runs}
        pool.close()
    seconds = {f"{r['setting']}-{r['seed']}": r["checkpoints"][-1]["seconds"] for r in runs}
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "progress": curves, "versus_fora": versus}
    result["wall_s"] = seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), result)
    plot(curves, args.out.with_suffix(".png"), args.model)
    report(curves, versus, seconds, args.reference)


def plot(curves: dict[str, Any], path: Path, model: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, (scale, data) in zip(axes, curves["scales"].items(), strict=True):
        names = list(dict.fromkeys(c["setting"] for c in data["curves"]))
        for c in data["curves"]:
            xs, ys = zip(*c["curve"], strict=True)
            first = c is next(d for d in data["curves"] if d["setting"] == c["setting"])
            label = c["setting"] if first else None
            ax.plot(xs, ys, color=f"C{names.index(c['setting'])}", marker=".", ms=3, alpha=0.85, label=label)
        ax.axhline(TARGETS[-1], color="0.5", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("images generated")
        ax.set_title(f"progress on held-out images ({scale})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("(HV − HV seeds) / (HV reference − HV seeds)")
    axes[0].set_ylim(-0.5, 1.2)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{model}: search progress against generated images", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def report(curves: dict[str, Any], versus: dict[str, Any], seconds: dict[str, float], reference: str) -> None:
    console = Console(width=120)
    for scale, data in curves["scales"].items():
        table = Table(title=f"images to reach each progress ({scale}), per seed; median's factor against {reference}")
        table.add_column("setting")
        for target in TARGETS:
            table.add_column(f"{target:.0%}")
        table.add_column("final progress")
        groups: dict[str, list[dict]] = {}
        for c in data["curves"]:
            groups.setdefault(c["setting"], []).append(c)
        medians = {
            (name, target): median_images([c["curve"] for c in group], target)
            for name, group in groups.items()
            for target in TARGETS
        }
        for name, group in groups.items():
            cells = []
            for target in TARGETS:
                reached = " ".join(_count(images_to(c["curve"], target)) for c in group)
                ours, theirs = medians[(name, target)], medians[(reference, target)]
                factor = f" ({theirs / ours:.1f}×)" if ours and theirs and name != reference else ""
                cells.append(reached + factor)
            table.add_row(name, *cells, " ".join(f"{c['curve'][-1][1]:.2f}" for c in group))
        console.print(table)
    table = Table(title="held-out loss of the final front against the best FORA-N within each budget")
    table.add_column("run")
    for budget in BUDGETS:
        table.add_column(f"{budget:.0%}")
    table.add_column("wall s")
    for run, rows in versus.items():
        cells = [
            "-" if r["ours"] is None else f"{r['ours']:.3g} / {'-' if r['fora'] is None else format(r['fora'], '.3g')}"
            for r in rows.values()
        ]
        table.add_row(run, *cells, f"{seconds[run]:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
