"""What construction costs, and what the constructed front alone is worth against FORA.

For each model (a registry name or a pipeline folder), a `--strategy construct` run is started on a fresh
database up to the constructed front: it reports the calibration images (the pass and the probes), their
seconds, and the seconds the sweep takes to build the front from them (the median of `--repeats` rebuilds),
with the number of schedules built and the memory the cost tensors take. With `--score`, every constructed
schedule and the baselines (FORA-2…6, the uncached model at the most steps each affords) are scored on the
run's held-out images, and each baseline is set against the constructed schedule with the highest mean PSNR
at no more MACs (the baselines themselves left out of the pick).

    python -m benchmarks.construct --score --out docs/research/data/construct.json
    python -m benchmarks.construct --models TINY_PIXART TINY_FLUX --metric fidelity --steps 20 --score \\
        --prompts EIGHT_PROMPTS.txt --images-per-prompt 2 --held-out-images 2 --resolution 32 \\
        --out docs/research/data/construct_tiny.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ecad_search.construct import ErrorModel, construct_front
from ecad_search.cost import cost_table
from ecad_search.evaluation import schedule_macs
from ecad_search.families import FIDELITY, mean
from ecad_search.search.run import SearchRun
from ecad_search.search.splits import SplitScorer

from .common import fresh_search, write_json
from .common import parser as common_parser


def measure(model: str, args: argparse.Namespace, folder: Path) -> dict:
    fields = {"metric": args.metric, "steps": args.steps} if args.metric else {}
    if args.held_out_images:
        fields["held_out_images_per_prompt"] = args.held_out_images
    if args.prompts:
        fields.update(prompts=str(args.prompts), images_per_prompt=args.images_per_prompt)
    if args.resolution:
        fields["resolution"] = args.resolution
    prepared = fresh_search(folder, Path(model).name, model=model, strategy="construct", **fields)
    search_run = SearchRun(prepared)
    try:
        start = time.perf_counter()
        search_run.start()
        calibration_s = time.perf_counter() - start
        versus = versus_baselines(search_run) if args.score else []
    finally:
        search_run.pool.close()
    stored = json.loads((prepared.out / "construction.json").read_text())
    error_model = ErrorModel.from_dict(stored["model"])
    template, settings, spec = search_run.template, prepared.settings, prepared.spec
    macs = cost_table(spec, height=settings.resolution, width=settings.resolution).component_macs()
    lane_macs = np.concatenate([macs[g.name].ravel() for g in template.groups])
    full = schedule_macs(template, spec, settings)
    seconds = []
    for _ in range(args.repeats):
        begin = time.perf_counter()
        front = construct_front(template, error_model, lane_macs, lambda s: schedule_macs(s, spec, settings) / full)
        seconds.append(time.perf_counter() - begin)
    lanes, steps = error_model.gram.shape[:2]
    construction = search_run.construction
    assert construction is not None
    return {
        "model": model,
        "lanes": lanes,
        "steps": steps,
        "calibration_images": construction.num_images * (1 + len(error_model.probes)),
        "calibration_s": calibration_s,
        "construction_s": statistics.median(seconds),
        "schedules": len(front),
        "cost_tensor_mib": lanes * (steps + 1) ** 2 * steps * 8 / 2**20,
        "versus_baselines": versus,
    }


def versus_baselines(search_run: SearchRun) -> list[dict]:
    """Each baseline (FORA-2…6, fewer steps) against the constructed schedule with the best held-out PSNR at
    no more MACs."""
    held_out = SplitScorer(search_run.prepared.splits.held_out, search_run.store, search_run.pool, needs_families=True)
    constructed = {digest: c.schedule for digest, c in search_run.constructed.items()}
    baselines = {candidate.digest(): name for name, candidate in search_run.baseline_settings().items()}
    candidates = {candidate.digest(): candidate for candidate in search_run.baseline_settings().values()}
    records = held_out.scores({**constructed, **candidates})
    psnr = {digest: mean(FIDELITY.values(record.scores) or []) for digest, record in records.items()}
    rows = []
    for digest, name in baselines.items():
        if digest not in records:
            continue
        cost = records[digest].cost
        within = [d for d in constructed if d in records and records[d].cost <= cost + 1e-9]
        best = max(within, key=lambda d: psnr[d] or 0.0, default=None)
        rows.append({
            "baseline": name, "macs": cost, "baseline_psnr_db": psnr[digest],
            "constructed_macs": None if best is None else records[best].cost,
            "constructed_psnr_db": None if best is None else psnr[best],
            "constructed_fill": None if best is None else constructed[best].fill,
            "constructed_layout": None if best is None else constructed[best].provenance["layout"],
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(model, args, Path(tmp)) for model in args.models]
    write_json(args.out, rows)
    table = Table("model", "lanes", "calibration images", "calibration s", "construction s", "schedules")
    for row in rows:
        table.add_row(
            Path(row["model"]).name, str(row["lanes"]), str(row["calibration_images"]),
            f"{row['calibration_s']:.1f}", f"{row['construction_s']:.2f}", str(row["schedules"]),
        )  # fmt: skip
    console = Console()
    console.print(table)
    versus = Table("model", "baseline", "MACs", "baseline dB", "constructed MACs", "constructed dB", "fill, layout")
    for row in rows:
        for line in row["versus_baselines"]:
            best = line["constructed_psnr_db"]
            versus.add_row(
                Path(row["model"]).name, line["baseline"], f"{line['macs']:.3f}", f"{line['baseline_psnr_db']:.2f}",
                "-" if best is None else f"{line['constructed_macs']:.3f}", "-" if best is None else f"{best:.2f}",
                "-" if best is None else f"{line['constructed_fill']}, {line['constructed_layout']}",
            )  # fmt: skip
    if versus.row_count:
        console.print(versus)


def parser():  # type: ignore[no-untyped-def]
    p = common_parser(__doc__)
    p.add_argument("--models", nargs="+", default=["digits", "digits-28"])
    p.add_argument("--repeats", type=int, default=5, help="rebuilds of the front timed (median)")
    p.add_argument("--metric", help="the search's metric (default: the model's); with it, --steps")
    p.add_argument("--steps", type=int, default=20, help="denoising steps, with --metric")
    p.add_argument("--score", action="store_true", help="score the front and FORA on the held-out images")
    p.add_argument("--held-out-images", type=int, help="held-out seeds per prompt (default: the model's)")
    p.add_argument("--resolution", type=int, help="square image size in pixels (default: the model's)")
    p.add_argument("--prompts", type=Path, help="calibration prompt file (default: the model's), with:")
    p.add_argument("--images-per-prompt", type=int, default=2, help="calibration seeds per prompt, with --prompts")
    p.add_argument("--out", type=Path, required=True)
    return p


if __name__ == "__main__":
    main()
