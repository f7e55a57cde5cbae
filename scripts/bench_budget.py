"""`--budget` against a BudCache-style baseline: the same local search (annealing, then hill climbing, at a
fixed MAC budget, from the best FORA within it) on whole steps only, as BudCache's masks are, against ours on
single components. Each method runs on its own fresh database, so the images it generated are its whole
cost; both are judged on the same held-out images (paired interval of ours against the baseline).

The baseline keeps BudCache's search and its step-level masks; it scores candidates with the search's own
metric rather than BudCache's final-latent MSE on one prompt, so the comparison isolates the mask space.

    python scripts/bench_budget.py --out docs/bench_budget_digits.json
    python scripts/bench_budget.py --model TINY_FOLDER --metric fidelity --steps 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ecad_search.pool import LocalPool
from ecad_search.search.budget import BudgetPlan
from ecad_search.search.config import SearchConfig
from ecad_search.search.runner import prepare, search_at_budget
from ecad_search.search.stats import paired_difference
from ecad_search.store import Store


def search(args: argparse.Namespace, budget: float, whole_steps: bool, folder: Path) -> dict[str, Any]:
    """One budget search on a fresh database: what it found, its held-out record, and what it cost."""
    db = f"sqlite:///{folder / ('steps' if whole_steps else 'components')}-{budget}.db"
    config = SearchConfig(model=args.model, generations=1, metric=args.metric, steps=args.steps, db=db,
                          out=str(folder / "out"), seed=args.seed)  # fmt: skip
    prepared = prepare(config)
    pool = LocalPool(prepared.spec, prepared.config.device)
    start = time.perf_counter()
    with Store(db) as store:
        ours = BudgetPlan.of(args.moves, args.screen, args.step_moves, args.patience, args.race)
        # BudCache climbs until a round improves nothing, however little the improvement (patience 0).
        plan = BudgetPlan.of(args.baseline_moves) if whole_steps else ours
        run = search_at_budget(prepared, budget, pool, store, plan, whole_steps=whole_steps)
    pool.close()
    outcome, records = run.outcome, run.held_out
    return {
        "budget": budget,
        "mask": "whole steps (BudCache-style)" if whole_steps else "components (ours)",
        "start": outcome.start.name,
        "macs_fraction": outcome.record.cost,
        "calibration_images": run.calibration_images,
        "seconds": time.perf_counter() - start,
        "held_out_loss": records[outcome.schedule.digest()].quality_loss,
        "start_held_out_loss": records[outcome.start.digest()].quality_loss,
        "scores": records[outcome.schedule.digest()].scores["prompt_scores"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.35])
    parser.add_argument("--moves", type=int, default=32, help="annealing moves of ours (`--budget-moves`)")
    parser.add_argument("--screen", type=int, default=1, help="proposals per move of ours (`--budget-screen`)")
    parser.add_argument("--step-moves", type=float, default=0.5, help="share of whole-step moves in ours")
    parser.add_argument("--patience", type=int, default=0, help="ours: `--budget-patience`")
    parser.add_argument("--race", type=float, default=0.25, help="ours: `--budget-race`")
    parser.add_argument("--baseline-moves", type=int, default=48, help="annealing moves of the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_budget.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            ours, theirs = (search(args, budget, whole, Path(tmp)) for whole in (False, True))
            lead = paired_difference(ours["scores"], theirs["scores"])
            ours["lead_over_baseline"] = {"mean": lead.mean, "low": lead.low, "high": lead.high}
            rows += [ours, theirs]
    table = Table("budget", "masks", "MACs", "images", "s", "held-out", "start's", title=f"{args.model}: --budget")
    for row in rows:
        start = f"{row['start_held_out_loss']:.4g} ({row['start']})"
        table.add_row(
            f"{row['budget']:.0%}", row["mask"], f"{row['macs_fraction']:.1%}", f"{row['calibration_images']:,}",
            f"{row['seconds']:.0f}", f"{row['held_out_loss']:.4g}", start,
        )  # fmt: skip
    Console(width=100).print(table)
    for row in rows[::2]:
        lead = row["lead_over_baseline"]
        print(f"{row['budget']:.0%}: ours better by {lead['mean']:.4g} [{lead['low']:.4g}, {lead['high']:.4g}]")
    args.out.write_text(json.dumps([{k: v for k, v in r.items() if k != "scores"} for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
