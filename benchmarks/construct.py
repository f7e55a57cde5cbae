"""What construction costs: the calibration pass, the probes and the dynamic program, per model.

For each model, a `--strategy construct` run is started on a fresh database up to the constructed front (no
candidate is scored): it reports the calibration images (the pass and the probes), their seconds, and the
seconds the sweep takes to build the front from them (the median of `--repeats` rebuilds), with the number of
schedules built and the memory the cost tensors take.

    python -m benchmarks.construct --out docs/research/data/construct.json
    python -m benchmarks.construct --models digits --repeats 1 --out OUT/construct.json
"""

from __future__ import annotations

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
from ecad_search.search.run import SearchRun

from .common import fresh_search, write_json
from .common import parser as common_parser


def measure(model: str, repeats: int, folder: Path) -> dict:
    prepared = fresh_search(folder, model, model=model, strategy="construct")
    search_run = SearchRun(prepared)
    try:
        start = time.perf_counter()
        search_run.start()
        calibration_s = time.perf_counter() - start
    finally:
        search_run.pool.close()
    stored = json.loads((prepared.out / "construction.json").read_text())
    error_model = ErrorModel.from_dict(stored["model"])
    template, settings, spec = search_run.template, prepared.settings, prepared.spec
    macs = cost_table(spec, height=settings.resolution, width=settings.resolution).component_macs()
    lane_macs = np.concatenate([macs[g.name].ravel() for g in template.groups])
    full = schedule_macs(template, spec, settings)
    seconds = []
    for _ in range(repeats):
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
    }


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(model, args.repeats, Path(tmp) / model) for model in args.models]
    write_json(args.out, rows)
    table = Table("model", "lanes", "calibration images", "calibration s", "construction s", "schedules")
    for row in rows:
        table.add_row(
            row["model"], str(row["lanes"]), str(row["calibration_images"]), f"{row['calibration_s']:.1f}",
            f"{row['construction_s']:.2f}", str(row["schedules"]),
        )  # fmt: skip
    Console().print(table)


def parser():  # type: ignore[no-untyped-def]
    p = common_parser(__doc__)
    p.add_argument("--models", nargs="+", default=["digits", "digits-28"])
    p.add_argument("--repeats", type=int, default=5, help="rebuilds of the front timed (median)")
    p.add_argument("--out", type=Path, required=True)
    return p


if __name__ == "__main__":
    main()
