"""The local search at a budget (`--budget`) against a BudCache-style baseline: the same search (annealing,
then hill climbing, at a fixed MAC budget, from the best FORA within it) on whole steps only, as BudCache's
masks are, against ours, whose climb moves single components too. Each method runs on its own fresh
database, so the images it generated are its whole cost; both are judged on the same held-out images (paired
interval of ours against the baseline). Several seeds add a table of means and spreads over them.

The baseline scores candidates with the search's own metric rather than BudCache's final-latent MSE on one
prompt, so the comparison isolates the mask space. What was measured with this bench, the levers it tried
and did not keep included, is in docs/research/budget.md.

    python -m benchmarks.budget --out docs/research/data/bench_budget_digits.json
    python -m benchmarks.budget --seed 0 1 2 --budgets 0.5     # three seeds, with the spread
    python -m benchmarks.budget --model TINY_FOLDER --metric fidelity --steps 20
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ecad_search.pool import LocalPool
from ecad_search.search.budget import BudgetPlan, Moves
from ecad_search.search.budget_run import search_at_budget
from ecad_search.store import Store
from ecad_search.verdict import paired_difference

from .common import fresh_search, parser, write_json

# The baseline moves whole steps throughout, as BudCache's masks are; ours climbs on single components too.
MASKS = {"steps": ("whole steps (BudCache-style)", Moves(step_share=1.0)), "components": ("components (ours)", Moves())}


def search(args: argparse.Namespace, seed: int, budget: float, kind: str, folder: Path) -> dict[str, Any]:
    """One budget search of `kind` ("steps": the baseline, "components": ours) on a fresh database: what it
    found, its held-out record, and what it cost."""
    ours = kind == "components"
    prepared = fresh_search(
        folder, f"{kind}-{budget}-seed{seed}", model=args.model, metric=args.metric, steps=args.steps, seed=seed,
        images_per_prompt=args.images_per_prompt,
        held_out_images_per_prompt=args.held_out_images_per_prompt,
    )  # fmt: skip
    pool = LocalPool(prepared.spec, prepared.config.device)
    start = time.perf_counter()
    mask, moves = MASKS[kind]
    # BudCache climbs until a round improves nothing, however little the improvement.
    plan = BudgetPlan.of(args.moves, race=args.race) if ours else BudgetPlan.of(args.baseline_moves)
    with Store(prepared.config.db) as store:
        run = search_at_budget(prepared, budget, pool, store, plan, moves=moves)
    pool.close()
    outcome, records = run.outcome, run.held_out
    return {
        "seed": seed,
        "budget": budget,
        "mask": mask,
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
    write_json(path, [{k: v for k, v in r.items() if k != "scores"} for r in rows])


def main(argv: list[str] | None = None) -> None:
    parse = parser(__doc__)
    parse.add_argument("--model", default="digits")
    parse.add_argument("--metric", default=None)
    parse.add_argument("--steps", type=int, default=None)
    parse.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.35])
    parse.add_argument("--moves", type=int, default=48, help="annealing moves of ours (`--budget-moves`)")
    parse.add_argument("--race", type=float, default=0.25, help="ours: `--budget-race`")
    parse.add_argument(
        "--images-per-prompt", type=int, default=None, help="calibration images per prompt (the model's default)"
    )
    parse.add_argument(
        "--held-out-images-per-prompt", type=int, default=None, help="held-out images per prompt (the model's default)"
    )
    parse.add_argument("--baseline-moves", type=int, default=48, help="annealing moves of the baseline")
    parse.add_argument(
        "--baseline", action=argparse.BooleanOptionalAction, default=True, help="run the BudCache-style baseline"
    )
    parse.add_argument("--seed", type=int, nargs="+", default=[0], help="one search of each kind per seed")
    parse.add_argument("--out", type=Path, default=Path("bench_budget.json"))
    args = parse.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, budget in itertools.product(args.seed, args.budgets):
            theirs = search(args, seed, budget, "steps", Path(tmp)) if args.baseline else None
            ours = search(args, seed, budget, "components", Path(tmp))
            if theirs is not None:
                lead = paired_difference(ours["scores"], theirs["scores"])
                ours["lead_over_baseline"] = {"mean": lead.mean, "low": lead.low, "high": lead.high}
            rows += [row for row in (ours, theirs) if row is not None]
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
    return str(row["mask"])


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
