"""Wall-clock speedup of cache schedules against the plain pipeline, and against what the MACs predict.

Default: a tiny-width but full-depth (28-block) PixArt-α pipeline on CPU, so the per-block structure that a
schedule removes is real. `--device cuda --full-size` builds the real PixArt-α architecture (1152 wide, T5
embeddings of 120 × 4096, the SD VAE) with random weights: random weights give true latency. Text encoding
is outside the timed region (prompt embeddings are precomputed), as in ECAD's latency measurements.

Runs are interleaved (plain, FORA-2, FORA-3, random, plain, ...) and the median is reported, so drift on a
noisy machine affects every schedule alike.

The latency probes of `--budget-latency` (uncached, step 0 only, each component kind alone) are timed in the
same rounds, and the latency model fitted on them predicts every other schedule's time: the table shows how
far that prediction, and the MACs' ratio, are from the measured time.

    python -m benchmarks.runtime                      # CPU, tiny width, 28 blocks
    python -m benchmarks.runtime --device cuda --full-size --batch 8 --out runtime.json
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from rich.console import Console
from rich.table import Table

from ecad_search import CacheSchedule, apply_schedule, estimate_macs
from ecad_search.cost.latency import LatencyModel, latency_probes
from ecad_search.heuristics import attention_every, fora, no_cache, tgate
from ecad_search.models import block_groups
from ecad_search.models.base import ModelSpec
from ecad_search.models.pixart import PIXART_ALPHA, at_resolution
from ecad_search.testing import FULL_DEPTH_TINY_PIXART, tiny_pixart_pipeline

from .common import parser as common_parser
from .common import write_json

SD_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 256,
}


UNHOOKED = "no hooks"


def build(full_size: bool, device: str, dtype: torch.dtype, seed: int, resolution: int) -> tuple[Any, ModelSpec, int]:
    """The pipeline, the spec its cost is computed from, and its image size in pixels."""
    if not full_size:
        pipe = tiny_pixart_pipeline(**FULL_DEPTH_TINY_PIXART, sample_size=16, seed=seed)
        config = dict(pipe.transformer.config)
        spec = ModelSpec("tiny-28", "pixart", "bench", config, text_tokens=16, vae_scale_factor=pipe.vae_scale_factor)
        return pipe.to(device, dtype), spec, 16 * pipe.vae_scale_factor
    spec = at_resolution(PIXART_ALPHA, resolution)
    pipe = tiny_pixart_pipeline(seed=seed, caption_channels=32)
    torch.manual_seed(seed)
    pipe.transformer = PixArtTransformer2DModel.from_config(spec.transformer_config)
    pipe.vae = AutoencoderKL(**SD_VAE | {"sample_size": resolution})
    pipe.vae_scale_factor = 8
    pipe.image_processor.config.vae_scale_factor = 8
    return pipe.to(device, dtype), spec, resolution


def schedules(spec: ModelSpec, steps: int, seed: int) -> list[CacheSchedule]:
    """The schedules the latency model is checked on: none of them is a probe it was fitted on."""
    groups = block_groups(spec)
    template = no_cache(groups, steps)
    rng = np.random.default_rng(seed)
    randoms = [
        template.with_genome(rng.random(template.genome_length) < share, name=f"rand-{share:.0%}")
        for share in (0.25, 0.5, 0.75)
    ]
    heuristics = [fora(groups, steps, n) for n in (2, 3, 5)] + [
        tgate(groups, steps, steps // 2).with_metadata(name="tgate"),
        attention_every(groups, steps, 2).with_metadata(name="attn-2"),
    ]
    return [template.with_metadata(name="plain"), *heuristics, *randoms]


def time_run(pipe: Any, schedule: CacheSchedule | None, call: dict[str, Any], device: str) -> float:
    """Seconds of one pipeline call following `schedule`, or with no hooks at all (None)."""
    with apply_schedule(pipe, schedule) if schedule is not None else contextlib.nullcontext():
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(**call, generator=torch.Generator().manual_seed(0))
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="real PixArt-α architecture, random weights")
    parser.add_argument("--resolution", type=int, default=256, help="with --full-size: 256, 512 or 1024 px")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="images per call (each is a CFG pair)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    pipe, spec, pixels = build(args.full_size, args.device, dtype, args.seed, args.resolution)
    pipe.set_progress_bar_config(disable=True)
    text_tokens, channels = spec.text_tokens, spec.transformer_config["caption_channels"]
    embeds = torch.randn(args.batch, text_tokens, channels, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(args.batch, text_tokens)
    call = {
        "prompt_embeds": embeds.to(args.device, dtype),
        "prompt_attention_mask": mask.to(args.device),
        "negative_prompt": None,
        "negative_prompt_embeds": torch.zeros_like(embeds).to(args.device, dtype),
        "negative_prompt_attention_mask": mask.to(args.device),
        "num_inference_steps": args.steps,
        "height": pixels,
        "width": pixels,
        "use_resolution_binning": False,
        "output_type": "pt",
    }
    candidates = schedules(spec, args.steps, args.seed)
    probes = latency_probes(candidates[0])
    timed: dict[str, CacheSchedule | None] = {s.name: s for s in (*candidates, *probes.values())} | {UNHOOKED: None}
    for schedule in timed.values():
        time_run(pipe, schedule, call, args.device)
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name, schedule in timed.items():
            times[name].append(time_run(pipe, schedule, call, args.device))
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    print(f"without hooks: {medians[UNHOOKED]:.4f} s; the uncached schedule's hooks add "
          f"{medians[candidates[0].name] / medians[UNHOOKED] - 1:.1%}")  # fmt: skip
    model = LatencyModel.fit(candidates[0], {name: medians[name] for name in probes})
    rows = report(spec, pixels, candidates, medians, model, args)
    if args.out:
        probe_seconds = {name: medians[name] for name in probes}
        document = {
            "settings": vars(args) | {"out": str(args.out)},
            "without_hooks": medians[UNHOOKED],
            "probes": probe_seconds,
            "schedules": rows,
        }
        write_json(args.out, document)


def report(
    spec: ModelSpec,
    pixels: int,
    candidates: list[CacheSchedule],
    medians: dict[str, float],
    model: LatencyModel,
    args: Any,
) -> list[dict[str, Any]]:
    """Print each schedule's speed-up as the MACs predict it, as the latency model predicts it, and measured."""
    size = {"height": pixels, "width": pixels, "batch_size": 2 * args.batch}
    plain = candidates[0]
    plain_macs, plain_time = estimate_macs(plain, spec, **size), medians[plain.name]
    title = f"{spec.name} on {args.device}, {args.steps} steps, batch {args.batch} (median of {args.repeats})"
    table = Table(title=title)
    for column in ("schedule", "compute", "time (s)", "measured", "MACs", "ratio", "model", "ratio"):
        table.add_column(column, no_wrap=True)
    rows = []
    for schedule in candidates:
        seconds = medians[schedule.name]
        row = {
            "schedule": schedule.name,
            "compute_fraction": schedule.compute_fraction,
            "seconds": seconds,
            "measured": plain_time / seconds,
            "macs_predicted": plain_macs / estimate_macs(schedule, spec, **size),
            "latency_model_predicted": model.seconds(plain) / model.seconds(schedule),
        }
        rows.append(row)
        table.add_row(
            schedule.name, f"{schedule.compute_fraction:.0%}", f"{seconds:.4f}", f"{row['measured']:.2f}x",
            f"{row['macs_predicted']:.2f}x", f"{row['measured'] / row['macs_predicted']:.2f}",
            f"{row['latency_model_predicted']:.2f}x", f"{row['measured'] / row['latency_model_predicted']:.2f}",
        )  # fmt: skip
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
