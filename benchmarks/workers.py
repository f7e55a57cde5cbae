"""Workers: candidates per minute in-process and on 1 and 2 Ray workers, the dispatch overhead per candidate,
each worker's resident memory with and without its text encoder, and the scaling this predicts for 8 GPUs on
PixArt-α.

The same candidates (a seeded initial population) are scored on the model's calibration split through the
search's own path (`SplitScorer`: claims, pool, one SQLite write per result). The overhead per candidate is
what a worker spends outside the evaluator: (scoring wall time × workers − Σ evaluator time) / candidates,
i.e. serialisation, scheduling, the result's write and idle time at the end. The prediction puts the measured
overhead beside ECAD's PixArt-α 256 px latency fit (22.1 ms/TMAC + 37.3 ms per image on an A6000) for these
candidates' MACs and 100 calibration images each, dispatched 24 per generation to 8 workers in our order.

    python -m benchmarks.workers --out docs/bench_workers.json
    python -m benchmarks.workers --device cuda --gpus-per-worker 0.5   # two workers share one GPU
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table

from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.evaluation import run_template
from ecad_search.models import get_family
from ecad_search.pool import LocalPool, make_pool, resident_mib
from ecad_search.search.seeding import initial_population
from ecad_search.search.splits import SplitScorer
from ecad_search.store import Store
from ecad_search.testing import save_tiny, tiny_pixart_pipeline

from .common import parser as common_parser
from .common import write_json

PIXART_MS_PER_TMAC, PIXART_MS_FIXED, PIXART_FULL_TMACS = 22.1, 37.3, (165.7 - 37.3) / 22.1
PIXART_IMAGES, GPUS, POPULATION = 100, 8, 24


def score(model: str, workers: int, candidates: int, folder: Path, device: str, gpu_share: float) -> dict[str, Any]:
    """Score the same candidates with this many workers (0: in this process)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    prepared = prepare(SearchRequest(model=model, generations=1))
    settings, spec = prepared.settings, prepared.spec
    template = run_template(spec, settings)
    schedules = {s.digest(): s for s in map(template.with_genome, initial_population(template, candidates, seed=1))}
    start = time.perf_counter()
    pool = make_pool(spec, device, workers=workers, gpus_per_worker=gpu_share)
    pool.prepare(settings)
    setup = time.perf_counter() - start
    scorer = SplitScorer(settings, Store(f"sqlite:///{folder / f'w{workers}.db'}"), pool)
    start = time.perf_counter()
    records = scorer.scores(schedules)
    wall = time.perf_counter() - start
    inside = sum(r.wall_time_s for r in records.values())
    memory = pool.resident_mib() if workers else [resident_mib()]
    pool.close()
    if workers:
        ray.shutdown()
    return {
        "workers": workers,
        "setup_s": setup,
        "scoring_s": wall,
        "candidates_per_min": 60 * len(records) / wall,
        "evaluator_s_per_candidate": inside / len(records),
        "overhead_s_per_candidate": (wall * max(workers, 1) - inside) / len(records),
        "resident_mib": memory,
        "macs_fractions": [r.cost for r in records.values()],
        "losses": {digest: r.quality_loss for digest, r in records.items()},
    }


def text_encoder_memory(folder: Path, device: str) -> dict[str, Any]:
    """A worker on the tiny PixArt before and after dropping its text encoder (parameters and process RSS),
    and the same for digits, whose prompt table is used at every call and so is never dropped."""
    rows = {}
    tiny = str(save_tiny(tiny_pixart_pipeline(seed=0), folder / "tiny"))
    for name, model in (("tiny-pixart", tiny), ("digits", "digits")):
        prepared = prepare(SearchRequest(model=model, generations=1, metric="fidelity"))
        pool = LocalPool(prepared.spec, device)
        pool.prepare(prepared.settings)
        pipe = pool.evaluator(prepared.settings).pipe
        encoders = get_family(prepared.spec).text_encoders
        parameters = sum(
            p.numel() * p.element_size() for n in encoders if getattr(pipe, n, None) is not None
            for p in getattr(pipe, n).parameters()
        )  # fmt: skip
        before = resident_mib()
        dropped = pool.release_text_encoders()
        gc.collect()
        after = resident_mib()
        rows[name] = {
            "dropped": dropped,
            "text_encoder_mib": parameters / 2**20,
            "rss_with_mib": before[0],
            "rss_without_mib": after[0],
            "gpu_with_mib": before[1],
            "gpu_without_mib": after[1],
        }
        pool.close()
    return rows


def predicted_efficiency(fractions: list[float], overhead_s: float) -> dict[str, float]:
    """8 workers on PixArt-α: each candidate's time from the latency fit at its MACs, plus the measured
    overhead; generations of 24 dispatched costliest first to the first free worker, as `RayPool` does;
    efficiency = busy / held."""
    times = [PIXART_IMAGES * (PIXART_MS_PER_TMAC * f * PIXART_FULL_TMACS + PIXART_MS_FIXED) / 1000 for f in fractions]
    generations = [times[i : i + POPULATION] for i in range(0, len(times), POPULATION)]
    busy = held = 0.0
    for generation in generations:
        free = [0.0] * GPUS
        for seconds in sorted(generation, reverse=True):
            worker = min(range(GPUS), key=free.__getitem__)
            free[worker] += seconds + overhead_s
        busy += sum(generation)
        held += GPUS * max(free)
    return {
        "candidate_s_mean": sum(times) / len(times),
        "overhead_share": overhead_s / (sum(times) / len(times)),
        "efficiency": busy / held,
    }


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: workers then share the GPUs")
    parser.add_argument("--gpus-per-worker", type=float, default=1.0, help="each worker's GPU share on cuda")
    parser.add_argument("--out", type=Path, default=Path("bench_workers.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            score(args.model, n, args.candidates, Path(tmp), args.device, args.gpus_per_worker) for n in args.workers
        ]
        memory = text_encoder_memory(Path(tmp), args.device)
    for run in runs:
        run["same_losses_as_first"] = run["losses"] == runs[0]["losses"]
    ray_runs = [r for r in runs if r["workers"]]
    overhead = max(r["overhead_s_per_candidate"] for r in ray_runs) if ray_runs else 0.0
    prediction = predicted_efficiency(runs[0]["macs_fractions"] * (POPULATION * 4 // args.candidates), overhead)
    report(runs, memory, prediction)
    write_json(args.out, {"runs": runs, "text_encoder": memory, "pixart_8_gpus": prediction})


def report(runs: list[dict[str, Any]], memory: dict[str, Any], prediction: dict[str, float]) -> None:
    console = Console(width=80)
    table = Table("workers", "setup s", "cand./min", "eval s", "overhead s", "same", "MiB per worker (host/GPU)")
    for r in runs:
        table.add_row(
            str(r["workers"]),
            f"{r['setup_s']:.1f}",
            f"{r['candidates_per_min']:.1f}",
            f"{r['evaluator_s_per_candidate']:.2f}",
            f"{r['overhead_s_per_candidate']:.3f}",
            "yes" if r["same_losses_as_first"] else "NO",
            ", ".join(f"{host:.0f}/{gpu:.0f}" for host, gpu in r["resident_mib"]),
        )
    console.print(table)
    for name, row in memory.items():
        console.print(
            f"{name}: text encoder {row['text_encoder_mib']:.2f} MiB, dropped {row['dropped'] or 'nothing'}; "
            f"RSS {row['rss_with_mib']:.0f} → {row['rss_without_mib']:.0f} MiB, "
            f"GPU {row['gpu_with_mib']:.0f} → {row['gpu_without_mib']:.0f} MiB"
        )
    console.print(
        f"PixArt-α, 8 GPUs: {prediction['candidate_s_mean']:.1f} s per candidate, overhead "
        f"{prediction['overhead_share']:.2%} of it, predicted efficiency {prediction['efficiency']:.1%}"
    )


if __name__ == "__main__":
    main()
