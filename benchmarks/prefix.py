"""What shared prefixes save in a real search: the same run with `--prefix-memory 0` and with a budget.

Each seed's search runs twice in-process, each on a fresh database: once computing every step of every
candidate, once sharing the steps that candidates scored together agree on. It reports the transformer calls
each made (counted on the pipeline, or on every worker with `--workers`), the wall time, and checks that both
stored exactly the same evaluations (every mask's loss and per-prompt scores equal to the last bit) and the
same front.

    python -m benchmarks.prefix --out docs/bench_prefix_digits.json
    python -m benchmarks.prefix --model TINY_FOLDER --metric fidelity --steps 20 --preset fast \\
        --guard paired --generations 12 --out docs/bench_prefix_tiny.json
    python -m benchmarks.prefix --seeds 0 --workers 2 --out docs/bench_prefix_workers.json
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.pool import EvaluationPool, LocalPool, make_pool
from ecad_search.search.run import SearchRun

from .common import parser as common_parser
from .common import write_json

QUERY = """
SELECT c.digest, e.eval_key, e.quality_loss, e.scores FROM ecad_evaluations e
JOIN ecad_candidates c ON c.id = e.candidate_id ORDER BY c.digest, e.eval_key
"""


def run_once(args: argparse.Namespace, seed: int, prefix_mib: int, folder: Path) -> dict:
    """One search; its transformer calls, wall time, stored evaluations and final front."""
    db = folder / f"s{seed}-p{prefix_mib}.db"
    config = SearchRequest(
        model=args.model, generations=args.generations, metric=args.metric, steps=args.steps, seed=seed,
        preset=args.preset, guard=args.guard, db=f"sqlite:///{db}", out=str(folder / "out"),
        prefix_memory=prefix_mib, images_per_prompt=args.images_per_prompt,
        held_out_images_per_prompt=args.held_out_images_per_prompt,
    )  # fmt: skip
    prepared = prepare(config)
    pool = make_pool(prepared.spec, prepared.config.device, workers=args.workers, prefix_mib=prefix_mib)
    start = time.perf_counter()
    search_run = SearchRun(prepared, pool=pool)
    calls = count_calls(pool)
    search_run.run()
    seconds = time.perf_counter() - start
    front = sorted(p.digest for p in search_run.search.state.archive.front())
    counted = calls()
    search_run.store.close()
    pool.close()
    with sqlite3.connect(db) as connection:
        rows = connection.execute(QUERY).fetchall()
    return {"calls": counted, "seconds": seconds, "evaluations": rows, "front": front}


def count_calls(pool: EvaluationPool) -> Any:
    """Count the transformer's calls from here on: on the pipeline in process, or on every Ray worker (a hook
    placed through Ray's `__ray_call__`, after the worker loaded its pipeline). Returns the counter."""

    def install(holder: Any) -> None:
        holder.calls = 0

        def count(*_: Any) -> None:
            holder.calls += 1

        first = holder.pool._first() if hasattr(holder, "pool") else holder._first()
        first.pipe.transformer.transformer_blocks[0].register_forward_pre_hook(count)

    if isinstance(pool, LocalPool):
        install(pool)
        return lambda: pool.calls
    ray = pool.ray
    ray.get([actor.__ray_call__.remote(install) for actor in pool.actors])
    return lambda: sum(ray.get([actor.__ray_call__.remote(lambda worker: worker.calls) for actor in pool.actors]))


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--guard", default=None)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--images-per-prompt", type=int, default=None, help="the model's default")
    parser.add_argument("--held-out-images-per-prompt", type=int, default=None, help="the model's default")
    parser.add_argument("--prefix-memory", type=int, default=1024, help="MiB of the sharing run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=0, help="Ray workers (a local Ray; 0: in process)")
    parser.add_argument("--out", type=Path, default=Path("bench_prefix.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            alone, shared = (run_once(args, seed, mib, Path(tmp)) for mib in (0, args.prefix_memory))
            if alone["evaluations"] != shared["evaluations"] or alone["front"] != shared["front"]:
                raise SystemExit(f"seed {seed}: sharing prefixes changed what the search stored")
            rows.append({
                "seed": seed, "evaluations": len(alone["evaluations"]),
                "calls_alone": alone["calls"], "calls_shared": shared["calls"],
                "seconds_alone": round(alone["seconds"], 1), "seconds_shared": round(shared["seconds"], 1),
            })  # fmt: skip
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows})
    where = f"on {args.workers} workers" if args.workers else "in process"
    table = Table("seed", "evaluations", "transformer calls", "saved", "wall s", title=f"shared prefixes, {where}")
    for row in rows:
        saved = 1 - row["calls_shared"] / row["calls_alone"]
        calls = f"{row['calls_alone']:,} → {row['calls_shared']:,}"
        wall = f"{row['seconds_alone']} → {row['seconds_shared']}"
        table.add_row(str(row["seed"]), str(row["evaluations"]), calls, f"{saved:.0%}", wall)
    Console(width=80).print(table)


if __name__ == "__main__":
    main()
