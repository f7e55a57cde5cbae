"""Wall-clock speedup of cache schedules against the plain pipeline, and against what the MACs predict.

Default: a tiny-width but full-depth (28-block) PixArt-α pipeline on CPU, so the per-block structure that a
schedule removes is real. `--device cuda --full-size` builds the real PixArt-α architecture (1152 wide, T5
embeddings of 120 × 4096, the SD VAE) with random weights: random weights give true latency. Text encoding
is outside the timed region (prompt embeddings are precomputed), as in ECAD's latency measurements.

Runs are interleaved (plain, FORA-2, FORA-3, random, plain, ...) and the median is reported, so drift on a
noisy machine affects every schedule alike.

    python scripts/bench_runtime.py                      # CPU, tiny width, 28 blocks
    python scripts/bench_runtime.py --device cuda --full-size --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from rich.console import Console
from rich.table import Table

from ecad_search import CacheSchedule, apply_schedule, estimate_macs
from ecad_search.heuristics import fora, no_cache
from ecad_search.models import block_groups
from ecad_search.models.base import ModelSpec
from ecad_search.models.pixart import PIXART_ALPHA
from ecad_search.tiny import FULL_DEPTH_TINY_PIXART, tiny_pixart_pipeline

SD_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 256,
}


def build(full_size: bool, device: str, dtype: torch.dtype, seed: int) -> tuple[Any, ModelSpec, int]:
    """The pipeline, the spec its cost is computed from, and its image size in pixels."""
    if not full_size:
        pipe = tiny_pixart_pipeline(**FULL_DEPTH_TINY_PIXART, sample_size=16, seed=seed)
        config = dict(pipe.transformer.config)
        spec = ModelSpec("tiny-28", "pixart", "bench", config, text_tokens=16, vae_scale_factor=pipe.vae_scale_factor)
        return pipe.to(device, dtype), spec, 16 * pipe.vae_scale_factor
    pipe = tiny_pixart_pipeline(seed=seed, caption_channels=32)
    torch.manual_seed(seed)
    pipe.transformer = PixArtTransformer2DModel.from_config(PIXART_ALPHA.transformer_config)
    pipe.vae = AutoencoderKL(**SD_VAE)
    pipe.vae_scale_factor = 8
    pipe.image_processor.config.vae_scale_factor = 8
    return pipe.to(device, dtype), PIXART_ALPHA, PIXART_ALPHA.resolution


def schedules(spec: ModelSpec, steps: int, seed: int) -> list[CacheSchedule]:
    groups = block_groups(spec)
    template = no_cache(groups, steps)
    rng = np.random.default_rng(seed)
    random_half = template.with_genome(rng.random(template.genome_length) < 0.5, name="random-50%")
    return [template, fora(groups, steps, 2), fora(groups, steps, 3), random_half]


def time_run(pipe: Any, schedule: CacheSchedule, call: dict[str, Any], device: str) -> float:
    with apply_schedule(pipe, schedule):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(**call, generator=torch.Generator().manual_seed(0))
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="real PixArt-α architecture, random weights")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="images per call (each is a CFG pair)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    pipe, spec, pixels = build(args.full_size, args.device, dtype, args.seed)
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
    for schedule in candidates:
        time_run(pipe, schedule, call, args.device)
    times: dict[str, list[float]] = {s.name: [] for s in candidates}
    for _ in range(args.repeats):
        for schedule in candidates:
            times[schedule.name].append(time_run(pipe, schedule, call, args.device))
    report(spec, pixels, candidates, times, args)


def report(spec: ModelSpec, pixels: int, candidates: list[CacheSchedule], times: dict, args: Any) -> None:
    size = {"height": pixels, "width": pixels, "batch_size": 2 * args.batch}
    plain = candidates[0]
    plain_macs, plain_time = estimate_macs(plain, spec, **size), statistics.median(times[plain.name])
    table = Table(
        title=f"{spec.name} on {args.device}, {args.steps} steps, batch {args.batch} (median of {args.repeats})"
    )
    for column in ("schedule", "compute", "TMACs", "predicted", "time (s)", "measured", "measured/predicted"):
        table.add_column(column)
    for schedule in candidates:
        macs, seconds = estimate_macs(schedule, spec, **size), statistics.median(times[schedule.name])
        predicted, measured = plain_macs / macs, plain_time / seconds
        table.add_row(
            schedule.name,
            f"{schedule.compute_fraction:.0%}",
            f"{macs / 1e12:.4f}",
            f"{predicted:.2f}x",
            f"{seconds:.4f}",
            f"{measured:.2f}x",
            f"{measured / predicted:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
