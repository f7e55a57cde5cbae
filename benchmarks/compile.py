"""Eager against compiled (`compile_components`), uncached and cached: what compilation adds to a schedule.

For each model, the pipeline is timed eager, then its components are compiled and it is timed again, each
mode's schedules interleaved (uncached, FORA-2, FORA-3, a learned schedule) and the median of `--repeats`
reported after a warm-up call each. Speed-ups are against the uncached pipeline of the same mode, beside what
the MACs predict; "vs eager" is each compiled time against the same schedule eager. Models: `digits` (the
bundled model; its learned schedule is the shipped `digits/refined-35`), `tiny-28` (tiny width, PixArt-α's
28 blocks; a seeded random mask at 35 % stands in for a learned one), `full-size` (PixArt-α's architecture
with random weights, for a GPU: `--device cuda`, `--resolution`, `--batch`; `--mode reduce-overhead` adds
CUDA graphs).

    python -m benchmarks.compile --models digits tiny-28 --out docs/research/data/compile_cpu.json
    python -m benchmarks.compile --models full-size --device cuda --resolution 256 --batch 1 --out gpu.json
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ecad_search import CacheSchedule, compile_components, estimate_macs, load_schedule
from ecad_search.heuristics import fora, no_cache
from ecad_search.models import block_groups, get_family, get_model
from ecad_search.models.base import ModelSpec

from .common import parser as common_parser
from .common import write_json
from .runtime import build, time_run


def setup(model: str, args: Any) -> tuple[Any, ModelSpec, dict[str, Any], list[CacheSchedule]]:
    """The pipeline, its spec, one call's arguments, and the schedules: uncached, FORA-2, FORA-3, learned."""
    if model == "digits":
        spec = get_model("digits")
        pipe = get_family(spec).load_pipeline(spec, device=args.device)
        call = {"prompt": [str(i % 10) for i in range(args.batch)], "output_type": "pt"}
        learned = load_schedule("digits/refined-35").with_metadata(name="refined-35")
        steps = spec.default_steps
    else:
        pipe, spec, pixels = build(model == "full-size", args.device, _dtype(args), 0, args.resolution)
        embeds = torch.randn(args.batch, spec.text_tokens, spec.transformer_config["caption_channels"])
        mask = torch.ones(args.batch, spec.text_tokens)
        call = {
            "prompt_embeds": embeds.to(args.device, _dtype(args)), "prompt_attention_mask": mask.to(args.device),
            "negative_prompt": None, "negative_prompt_embeds": torch.zeros_like(embeds).to(args.device, _dtype(args)),
            "negative_prompt_attention_mask": mask.to(args.device), "height": pixels, "width": pixels,
            "use_resolution_binning": False, "output_type": "pt",
        }  # fmt: skip
        steps = 20
        template = no_cache(block_groups(spec), steps)
        genes = np.random.default_rng(0).random(template.genome_length) < 0.35
        learned = template.with_genome(genes, name="random-35 %")
    pipe.set_progress_bar_config(disable=True)
    groups = block_groups(spec)
    plain = no_cache(groups, steps).with_metadata(name="uncached")
    cached = [fora(groups, steps, 2), fora(groups, steps, 3), learned]
    return pipe, spec, {**call, "num_inference_steps": steps}, [plain, *cached]


def _dtype(args: Any) -> torch.dtype:
    return torch.float16 if args.device == "cuda" else torch.float32


def medians(pipe: Any, schedules: list[CacheSchedule], call: dict[str, Any], args: Any) -> dict[str, float]:
    """Median seconds per schedule: a warm-up call each (it compiles), then `repeats` interleaved rounds."""
    for schedule in schedules:
        time_run(pipe, schedule, call, args.device)
    runs: dict[str, list[float]] = {s.name: [] for s in schedules}
    for _ in range(args.repeats):
        for schedule in schedules:
            runs[schedule.name].append(time_run(pipe, schedule, call, args.device))
    return {name: statistics.median(seconds) for name, seconds in runs.items()}


def measure(model: str, args: Any) -> list[dict[str, Any]]:
    pipe, spec, call, schedules = setup(model, args)
    eager = medians(pipe, schedules, call, args)
    start = time.perf_counter()
    compile_components(pipe, **({"mode": args.mode} if args.mode else {}))
    compiled = medians(pipe, schedules, call, args)
    warm_up_s = time.perf_counter() - start
    full = estimate_macs(schedules[0], spec)
    rows = []
    for schedule in schedules:
        predicted = full / estimate_macs(schedule, spec)
        for mode, seconds in (("eager", eager), ("compiled", compiled)):
            rows.append({
                "model": model, "mode": mode, "schedule": schedule.name, "seconds": seconds[schedule.name],
                "speedup": seconds["uncached"] / seconds[schedule.name], "macs_predicted": predicted,
                "vs_eager": eager[schedule.name] / seconds[schedule.name], "compile_and_time_s": warm_up_s,
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for model in args.models:
        rows += measure(model, args)
        if args.out:
            write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "rows": rows})
    title = f"{args.device}, batch {args.batch}, median of {args.repeats}"
    table = Table("model", "mode", "schedule", "s / call", "speed-up", "MACs predict", "vs eager", title=title)
    for row in rows:
        table.add_row(
            row["model"], row["mode"], row["schedule"], f"{row['seconds']:.4f}", f"{row['speedup']:.2f}x",
            f"{row['macs_predicted']:.2f}x", f"{row['vs_eager']:.2f}x",
        )  # fmt: skip
    Console().print(table)


def parser():  # type: ignore[no-untyped-def]
    p = common_parser(__doc__)
    p.add_argument("--models", nargs="+", default=["digits", "tiny-28"], choices=["digits", "tiny-28", "full-size"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--resolution", type=int, default=256, help="full-size: 256, 512 or 1024 px")
    p.add_argument("--batch", type=int, default=1, help="images per call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mode", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path)
    return p


if __name__ == "__main__":
    main()
