"""What a 20-step schedule carried to another step count (`convert --steps`) is worth there.

For each step count, on a fresh database: the shipped 20-step refined digits schedules carried over by the
scheduler's timesteps; FORA-2…4 at that step count; a construction at that step count (one calibration pass:
the cheapest search there), its schedule with the least predicted error at no more MACs than each FORA; and
the uncached model at fewer steps. All are scored on the same held-out images; each is set against the
cheapest FORA that costs at least as much (so ours never has more MACs than its rival) by the paired
difference of PSNR to the uncached image and of adherence (mean and 95 % interval).

    python -m benchmarks.retime --steps 10 28 50 --held-out-images 10 --out docs/research/data/retime.json
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ecad_search.families import ADHERENCE, FIDELITY, Family, mean
from ecad_search.formats import load_schedule
from ecad_search.retime import retime_for_model
from ecad_search.search.run import SearchRun

from .common import fresh_search, write_json
from .common import parser as common_parser

CARRIED = ("digits/refined-50", "digits/refined-35", "digits/refined-25")
FORA = ("fora-2", "fora-3", "fora-4")


def measure(steps: int, held_out_images: int, folder: Path) -> list[dict]:
    prepared = fresh_search(
        folder, f"digits-{steps}", model="digits", strategy="construct", steps=steps,
        held_out_images_per_prompt=held_out_images,
    )  # fmt: skip
    search_run = SearchRun(prepared)
    try:
        search_run.start()
        named = {name: c for name, c in search_run.baseline_settings().items() if name in FORA or "steps" in name}
        named.update({f"{n.split('/')[1]}@{steps}": retime_for_model(load_schedule(n), prepared.spec, steps)
                      for n in CARRIED})  # fmt: skip
        fora = [name for name in FORA if name in named]  # a FORA that equals a cheaper one at few steps is left out
        fora_cost = {name: search_run.search.relative_macs(named[name]) for name in fora}
        for name, cost in fora_cost.items():
            within = [c for c in search_run.constructed.values() if c.cost <= cost + 1e-9]
            if within:
                named[f"constructed ≤ {name}"] = min(within, key=lambda c: c.predicted).schedule
        records = search_run.held_out.scores({candidate.digest(): candidate for candidate in named.values()})
    finally:
        search_run.pool.close()
    scored = {name: records[c.digest()] for name, c in named.items() if c.digest() in records}
    rows = []
    for name, record in scored.items():
        dearer = [f for f in FORA if f in scored and scored[f].cost >= record.cost - 1e-9]
        rival = min(dearer, key=lambda f: scored[f].cost, default=None)
        theirs = None if rival is None else scored[rival].scores
        rows.append({
            "steps": steps, "schedule": name, "macs": record.cost, "loss": record.quality_loss,
            "psnr_db": mean(FIDELITY.values(record.scores)), "adherence": mean(ADHERENCE.values(record.scores)),
            "rival": rival, "rival_macs": None if rival is None else scored[rival].cost,
            "psnr_vs_rival_db": versus(FIDELITY, record.scores, theirs),
            "adherence_vs_rival": versus(ADHERENCE, record.scores, theirs),
        })  # fmt: skip
    return rows


def versus(family: Family, ours: dict, theirs: dict | None) -> list[float] | None:
    return None if theirs is None else paired(family.values(ours), family.values(theirs))


def paired(ours: list[float] | None, theirs: list[float] | None) -> list[float] | None:
    """Mean paired difference and its normal 95 % interval, [mean, low, high]."""
    if not ours or not theirs or len(ours) != len(theirs) or len(ours) < 2:
        return None
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    centre = statistics.fmean(differences)
    half = 1.96 * statistics.stdev(differences) / math.sqrt(len(differences))
    return [centre, centre - half, centre + half]


def interval(paired_difference: list[float] | None) -> str:
    if paired_difference is None:
        return "-"
    centre, low, high = paired_difference
    return f"{centre:+.2f} [{low:+.2f}, {high:+.2f}]"


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            rows += measure(steps, args.held_out_images, Path(tmp))
            write_json(args.out, rows)
    table = Table("steps", "schedule", "MACs", "PSNR dB", "vs", "Δ PSNR dB", "Δ adherence")
    for row in rows:
        table.add_row(
            str(row["steps"]), row["schedule"], f"{row['macs']:.3f}", f"{row['psnr_db']:.2f}", row["rival"] or "-",
            interval(row["psnr_vs_rival_db"]), interval(row["adherence_vs_rival"]),
        )  # fmt: skip
    Console().print(table)


def parser():  # type: ignore[no-untyped-def]
    p = common_parser(__doc__)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 28, 50])
    p.add_argument("--held-out-images", type=int, default=10, help="held-out seeds per prompt")
    p.add_argument("--out", type=Path, required=True)
    return p


if __name__ == "__main__":
    main()
