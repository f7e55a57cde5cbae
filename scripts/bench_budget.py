"""`--budget` against a BudCache-style baseline: the same local search (annealing, then hill climbing, at a
fixed MAC budget, from the best FORA within it) on whole steps only, as BudCache's masks are, against ours,
whose climb moves single components too (`--no-coarse`: so does its annealing). Each method runs on its
own fresh database, so the images it generated are its whole cost; both are judged on the same held-out
images (paired interval of ours against the baseline).

The baseline keeps BudCache's search and its step-level masks; it scores candidates with the search's own
metric rather than BudCache's final-latent MSE on one prompt, so the comparison isolates the mask space
(on digits, per-image scores like that MSE do not rank schedules as the Fréchet loss does:
`bench_proxies.py`). With `--published`, the baseline is instead BudCache's search as released
(`ecad_search/search/budcache.py`: a random start, 200 annealing moves, a climb over the whole
neighbourhood), which generates more images than the scaled-down one. Several seeds add a table
of means and spreads over them.

    python scripts/bench_budget.py --out docs/bench_budget_digits.json
    python scripts/bench_budget.py --patience 0 1 2 --seed 1    # ours at three patiences, one baseline
    python scripts/bench_budget.py --preview 0.5 --seed 2       # ours previewing moves on half the images
    python scripts/bench_budget.py --preview 0.5 --seed 0 1 2 3 4 5 --budgets 0.5   # six seeds, with the spread
    python scripts/bench_budget.py --images-per-prompt 16 --moves 12 --no-baseline   # ours on 160 images a move
    python scripts/bench_budget.py --published --seed 0 1 2       # against BudCache as released
    python scripts/bench_budget.py --published --batch 4 --seed 3  # ours climbing to the first improving 4
    python scripts/bench_budget.py --model TINY_FOLDER --metric fidelity --steps 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ecad_search.pool import LocalPool
from ecad_search.search.budcache import BudCachePlan
from ecad_search.search.budget import BudgetPlan
from ecad_search.search.config import SearchConfig
from ecad_search.search.runner import prepare, search_at_budget
from ecad_search.search.stats import paired_difference
from ecad_search.store import Store

MASKS = {
    "steps": "whole steps (BudCache-style)",
    "published": "whole steps (BudCache as released)",
    "components": "components (ours)",
}


def search(
    args: argparse.Namespace, seed: int, budget: float, patience: int | None, folder: Path, batch: int = 0
) -> dict[str, Any]:
    """One budget search on a fresh database: what it found, its held-out record, and what it cost.

    `patience` None is the BudCache-style baseline (whole steps); a number is ours with that patience, its
    climbing rounds scored `batch` neighbours at a time.
    """
    whole_steps = patience is None
    published = whole_steps and args.published
    kind = ("published" if published else "steps") if whole_steps else f"components-{patience}-{batch}"
    db = f"sqlite:///{folder / kind}-{budget}-seed{seed}.db"
    config = SearchConfig(model=args.model, generations=1, metric=args.metric, steps=args.steps, db=db,
                          out=str(folder / "out"), seed=seed,
                          images_per_prompt=None if whole_steps else args.images_per_prompt)  # fmt: skip
    prepared = prepare(config)
    pool = LocalPool(prepared.spec, prepared.config.device)
    start = time.perf_counter()
    with Store(db) as store:
        # BudCache climbs until a round improves nothing, however little the improvement (patience 0).
        ours = (args.moves, args.screen, args.step_moves, patience, args.race, args.coarse, args.preview)
        plan = BudgetPlan.of(args.baseline_moves) if whole_steps else BudgetPlan.of(*ours, args.finalists, batch)
        budcache = BudCachePlan() if published else None
        run = search_at_budget(prepared, budget, pool, store, plan, whole_steps=whole_steps, budcache=budcache)
    pool.close()
    outcome, records = run.outcome, run.held_out
    return {
        "seed": seed,
        "budget": budget,
        "mask": MASKS[kind.split("-")[0]],
        "patience": patience,
        "preview": None if whole_steps else args.preview,
        "finalists": None if whole_steps else args.finalists,
        "batch": None if whole_steps else batch,
        "images_per_prompt": prepared.settings.images_per_prompt,
        "start": outcome.start.name,
        "macs_fraction": outcome.record.cost,
        "calibration_images": run.calibration_images,
        "seconds": time.perf_counter() - start,
        "search_loss": outcome.record.quality_loss,
        "held_out_loss": records[outcome.schedule.digest()].quality_loss,
        "start_held_out_loss": records[outcome.start.digest()].quality_loss,
        "scores": records[outcome.schedule.digest()].scores["prompt_scores"],
    }


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows so far, after every search: a long bench cut short keeps what it measured."""
    path.write_text(json.dumps([{k: v for k, v in r.items() if k != "scores"} for r in rows], indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.35])
    parser.add_argument("--moves", type=int, default=48, help="annealing moves of ours (`--budget-moves`)")
    parser.add_argument("--screen", type=int, default=1, help="proposals per move of ours (`--budget-screen`)")
    parser.add_argument("--step-moves", type=float, default=0.5, help="share of whole-step moves in ours")
    parser.add_argument(
        "--patience", type=int, nargs="+", default=[0], help="ours: `--budget-patience` (ours runs once per value)"
    )
    parser.add_argument("--race", type=float, default=0.25, help="ours: `--budget-race`")
    parser.add_argument(
        "--coarse", action=argparse.BooleanOptionalAction, default=True, help="ours: `--budget-coarse` (or mixed)"
    )
    parser.add_argument(
        "--preview", type=float, default=1.0, help="ours: `--budget-preview` (share of images moves are previewed on)"
    )
    parser.add_argument(
        "--images-per-prompt", type=int, default=None, help="ours: calibration images per prompt (the model's default)"
    )
    parser.add_argument("--finalists", type=int, default=2, help="ours: a previewed round's best scored in full")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[0],
        help="ours: a climbing round's neighbours scored per batch, stopping at the first that improves (0: all at"
        " once; ours runs once per value)",
    )  # fmt: skip
    parser.add_argument("--baseline-moves", type=int, default=48, help="annealing moves of the baseline")
    parser.add_argument(
        "--baseline", action=argparse.BooleanOptionalAction, default=True, help="run the BudCache-style baseline"
    )
    parser.add_argument(
        "--published", action="store_true", help="the baseline is BudCache's search as released (`budcache.py`)"
    )
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one search of each kind per seed")
    parser.add_argument("--out", type=Path, default=Path("bench_budget.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, budget in itertools.product(args.seed, args.budgets):
            theirs = search(args, seed, budget, None, Path(tmp)) if args.baseline else None
            for patience, batch in itertools.product(args.patience, args.batch):
                ours = search(args, seed, budget, patience, Path(tmp), batch)
                if theirs is not None:
                    lead = paired_difference(ours["scores"], theirs["scores"])
                    ours["lead_over_baseline"] = {"mean": lead.mean, "low": lead.low, "high": lead.high}
                rows.append(ours)
                write(args.out, rows)
            if theirs is not None:
                rows.append(theirs)
                write(args.out, rows)
    console = Console(width=100)
    table = Table(
        "seed", "budget", "masks", "MACs", "images", "s", "held-out", "start's", title=f"{args.model}: --budget"
    )
    for row in rows:
        start = f"{row['start_held_out_loss']:.4g} ({row['start']})"
        table.add_row(
            str(row["seed"]), f"{row['budget']:.0%}", label(row), f"{row['macs_fraction']:.1%}",
            f"{row['calibration_images']:,}", f"{row['seconds']:.0f}", f"{row['held_out_loss']:.4g}", start,
        )  # fmt: skip
    console.print(table)
    for row in rows:
        if lead := row.get("lead_over_baseline"):
            which = f"seed {row['seed']}, {row['budget']:.0%}, {label(row)}"
            console.print(f"{which}: ours better by {lead['mean']:.4g} [{lead['low']:.4g}, {lead['high']:.4g}]")
    if len(args.seed) > 1:
        console.print(summary(rows))


def label(row: dict[str, Any]) -> str:
    if row["patience"] is None:
        return row["mask"]
    batch = f", batches of {row['batch']}" if row.get("batch") else ""
    return f"{row['mask']}, patience {row['patience']}{batch}"


def summary(rows: list[dict[str, Any]]) -> Table:
    """Per budget and search, over the seeds: the mean held-out loss with its spread, the mean images, and
    on how many seeds ours was lower than the baseline with a paired 95 % interval above zero."""
    table = Table("budget", "masks", "seeds", "held-out mean", "sd", "images mean", "lower", title="over the seeds")
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["budget"], label(row)), []).append(row)
    for (budget, masks), group in groups.items():
        losses = [row["held_out_loss"] for row in group]
        images = statistics.mean(row["calibration_images"] for row in group)
        leads = [row["lead_over_baseline"] for row in group if "lead_over_baseline" in row]
        lower = f"{sum(lead['low'] > 0 for lead in leads)} of {len(leads)}" if leads else ""
        spread = f"{statistics.stdev(losses):.3g}" if len(losses) > 1 else ""
        mean = f"{statistics.mean(losses):.4g}"
        table.add_row(f"{budget:.0%}", masks, str(len(group)), mean, spread, f"{images:,.0f}", lower)
    return table


if __name__ == "__main__":
    main()
