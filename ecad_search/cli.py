"""The `ecad-search` command: generate, describe and make schedules, convert formats, list models.

Every user error ends as one line on stderr naming the problem and the fix, with exit code 2, and nothing
half-written: outputs are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .cost import cache_memory, cost_table, estimate_macs, resolve_spec
from .files import write_atomic
from .formats import load_schedule, save_schedule, to_cache_dit
from .heuristics import FAMILIES as HEURISTICS
from .heuristics import all_heuristics
from .metrics import MetricNotAvailableError
from .models import ModelNotAvailableError, block_groups, get_model, model_names, schedule_metadata
from .models.base import ModelSpec
from .schedule import CacheSchedule, ScheduleError
from .search.runner import SearchConfig, run_search

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Learned cache schedules for diffusion transformers (PixArt-α/Σ, FLUX.1, any diffusers DiT).",
)
console = Console()
errors = Console(stderr=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="registry name or diffusers pipeline folder")]


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into a one-line message and exit code 2."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (
            UsageError,
            ScheduleError,
            ModelNotAvailableError,
            MetricNotAvailableError,
            ValueError,
            FileNotFoundError,
        ) as err:
            errors.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return run


def _spec(model: str, resolution: int | None = None) -> ModelSpec:
    spec = get_model(model)
    if resolution and resolution != spec.resolution and spec.family == "pixart" and spec.transformer_id:
        from .models.pixart import at_resolution

        spec = at_resolution(spec, resolution)
    return spec


@app.callback(invoke_without_command=True)
def main_form(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registry name or pipeline folder")] = None,
    generations: Annotated[int, typer.Option(help="NSGA-II generations")] = 50,
    population: Annotated[int | None, typer.Option(help="population size (default: the preset's)")] = None,
    preset: Annotated[str, typer.Option(help="'default' (ours) or 'ecad' (the paper's settings)")] = "default",
    metric: Annotated[
        str | None,
        typer.Option(help="reward, fidelity, image-reward, clip (default: fidelity on digits, else image-reward)"),
    ] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompt file (.txt, .json, .csv)")] = None,
    images_per_prompt: Annotated[int, typer.Option(help="seeds per prompt")] = 1,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square image size in pixels")] = None,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    cost: Annotated[str, typer.Option(help="'macs' (analytic) or 'latency' (measured)")] = "macs",
    seed: int = 0,
    batch_size: Annotated[int, typer.Option(help="images per pipeline call (0: all at once)")] = 0,
    db: Annotated[str, typer.Option(help="SQLAlchemy URL of the run database")] = "sqlite:///ecad-search.db",
    run: Annotated[str | None, typer.Option(help="run name (default: derived from the options)")] = None,
    out: Annotated[Path, typer.Option(help="output folder; the run writes into OUT/RUN")] = Path("runs"),
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Search cache schedules: `ecad-search --model pixart-alpha --generations 50`.

    Re-running the same command resumes the run from the database; evaluated masks are never evaluated again.
    """
    _quiet_libraries()
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)
    friendly(_search)(
        SearchConfig(
            model=model,
            generations=generations,
            metric=metric,
            preset=preset,
            population=population,
            prompts=str(prompts) if prompts else None,
            images_per_prompt=images_per_prompt,
            steps=steps,
            resolution=resolution,
            guidance=guidance,
            cost=cost,
            seed=seed,
            batch_size=batch_size,
            db=db,
            run=run,
            out=str(out),
            device=device,
        )
    )


def _search(config: SearchConfig) -> None:
    search_run, reports = run_search(config, console)
    prepared = search_run.prepared
    console.print(
        f"run [bold]{prepared.run}[/bold]: {len(reports)} generations, "
        f"{sum(r.evaluated for r in reports)} new evaluations, {sum(r.memo_hits for r in reports)} from the database; "
        f"hypervolume {reports[-1].hypervolume:.4f}"
    )
    comparisons = search_run.versus_baselines()
    beaten = [c.name for c in comparisons if c.beaten]
    console.print(
        f"the front beats {len(beaten)} of {len(comparisons)} FORA baselines at equal or lower MACs"
        + (f" ({', '.join(beaten)})" if beaten else "")
    )
    console.print(f"front, plot and tables (vs_fora.md: the comparison) in {prepared.out}/")


@app.command()
@friendly
def runs(db: Annotated[str, typer.Option(help="SQLAlchemy URL")] = "sqlite:///ecad-search.db") -> None:
    """List the runs in a database with their status."""
    from .store import Store

    Store.validate_url(db)
    table = Table("run", "model", "metric", "seed", "status", "generations", "updated")
    for info in Store(db).list_runs():
        table.add_row(
            info.name,
            info.model,
            info.metric,
            str(info.seed),
            info.status,
            str(info.generations_done),
            info.updated_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@app.command()
@friendly
def export(
    run: Annotated[str, typer.Option(help="run name (see `ecad-search runs`)")],
    out: Annotated[Path, typer.Option(help="output schedule JSON")],
    db: Annotated[str, typer.Option(help="SQLAlchemy URL")] = "sqlite:///ecad-search.db",
    max_loss: Annotated[float | None, typer.Option(help="the cheapest schedule within this quality loss")] = None,
    max_macs: Annotated[float | None, typer.Option(help="the best schedule within this MACs fraction")] = None,
    knee_point: Annotated[bool, typer.Option("--knee", help="the knee of the front")] = False,
) -> None:
    """Export one schedule from a run's front."""
    from .search.export import export_from_run

    if sum(x is not None and x is not False for x in (max_loss, max_macs, knee_point or None)) != 1:
        raise UsageError("choose exactly one of --max-loss, --max-macs, --knee")
    schedule = export_from_run(db, run, max_loss=max_loss, max_macs=max_macs, knee_point=knee_point)
    save_schedule(schedule, out)
    loss = schedule.metrics["quality_loss"]["value"]
    console.print(f"wrote {out}: quality loss {loss:.4f}, {schedule.metrics['macs_fraction']['value']:.1%} of MACs")


@app.command()
@friendly
def models() -> None:
    """List the registered models."""
    table = Table("name", "family", "steps", "resolution", "guidance", "dtype", "description")
    for name in model_names():
        spec = get_model(name)
        table.add_row(
            name,
            spec.family,
            str(spec.default_steps),
            str(spec.resolution),
            str(spec.guidance_scale),
            spec.dtype,
            spec.description,
        )
    console.print(table)


@app.command()
@friendly
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="text prompt")],
    model: ModelOption = "digits",
    schedule: Annotated[Path | None, typer.Option(help="schedule JSON (ours or ECAD's); none = no caching")] = None,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the schedule's or model's)")] = None,
    seed: int = 0,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square image size in pixels")] = None,
    out: Annotated[Path, typer.Option(help="output PNG")] = Path("image.png"),
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
    compare: Annotated[bool, typer.Option(help="also time the uncached run and report the speedup")] = False,
) -> None:
    """Generate one image, optionally following a schedule; print wall time, MACs and the fraction saved."""
    from .generation import GenerationSettings, load_pipeline, resolve_device
    from .generation import generate as run

    cached = load_schedule(schedule) if schedule else None
    spec = _spec(model, resolution)
    if cached and steps and steps != cached.num_steps:
        raise UsageError(f"--steps {steps} differs from the schedule's {cached.num_steps} steps; drop --steps")
    settings = GenerationSettings.for_model(
        spec,
        steps=steps or (cached.num_steps if cached else None),
        guidance_scale=guidance,
        resolution=resolution,
        seed=seed,
    )
    plain = CacheSchedule.all_compute(block_groups(spec), settings.steps, **schedule_metadata(spec))
    pipe = load_pipeline(spec, device=resolve_device(device))
    images, seconds = run(pipe, spec, [prompt], settings, schedule=cached)
    image = _viewable(images[0])
    write_atomic(out, _png_bytes(image))
    size = {"height": settings.height, "width": settings.width}
    full = estimate_macs(plain, spec, **size)
    used = estimate_macs(cached, spec, **size) if cached else full
    console.print(f"wrote {out} ({image.size[0]}x{image.size[1]})")
    console.print(f"wall time {seconds:.3f} s; {used / 1e12:.4f} TMACs; {1 - used / full:.1%} of MACs saved")
    if compare and cached:
        _, base = run(pipe, spec, [prompt], settings)
        console.print(f"uncached {base:.3f} s: speedup {base / seconds:.2f}x (MACs predict {full / used:.2f}x)")


@app.command()
@friendly
def grid(
    model: ModelOption = "digits",
    schedule: Annotated[Path | None, typer.Option(help="schedule JSON; none = no caching")] = None,
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="output PNG")] = Path("digits.png"),
) -> None:
    """All ten digits of the digits model in one image (with or without a schedule)."""
    from .generation import GenerationSettings, load_pipeline
    from .generation import generate as run
    from .models.digits import DIGIT_PROMPTS, digit_grid

    spec = get_model(model)
    if spec.family != "digits":
        raise UsageError(f"grid draws the ten digits of a digits model; {spec.name} is a {spec.family} model")
    cached = load_schedule(schedule) if schedule else None
    settings = GenerationSettings.for_model(spec, steps=cached.num_steps if cached else None, seed=seed)
    images, seconds = run(load_pipeline(spec), spec, DIGIT_PROMPTS, settings, schedule=cached)
    write_atomic(out, _png_bytes(digit_grid(images, factor=16)))
    console.print(f"wrote {out} in {seconds:.2f} s")


@app.command()
@friendly
def describe(
    schedule: Annotated[Path, typer.Argument(help="schedule JSON (ours or ECAD's)")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="override the schedule's model")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG heat map of the mask")] = None,
) -> None:
    """Shape, compute fraction, MACs and peak cache memory of a schedule."""
    sched = load_schedule(schedule)
    spec = resolve_spec(model, sched)
    table = cost_table(spec, height=sched.height or spec.resolution, width=sched.width or spec.resolution)
    if table.groups != sched.groups:
        raise UsageError(f"{schedule} does not fit {spec.name}'s blocks; pass --model with the right model")
    plain = CacheSchedule.all_compute(sched.groups, sched.num_steps, **schedule_metadata(spec))
    plain = plain.with_metadata(height=sched.height, width=sched.width, guidance_scale=sched.guidance_scale)
    macs, full = estimate_macs(sched, spec), estimate_macs(plain, spec)
    linear, linear_full = (estimate_macs(s, spec, attention_matmuls=False) for s in (sched, plain))
    memory, memory_all = (
        cache_memory(sched, spec),
        cache_memory(plain.with_genome(np.zeros(plain.genome_length)), spec),
    )
    out = Table(title=f"{sched.name or schedule.name}  ({spec.name})", show_header=False)
    out.add_row(
        "shape",
        " + ".join(f"{sched.num_steps}×{g.num_blocks}×{len(g.components)} {g.name}" for g in sched.groups),
    )
    out.add_row("compute fraction", f"{sched.compute_fraction:.1%} of component evaluations")
    for group in sched.groups:
        mask = sched.mask(group.name)
        shares = ", ".join(f"{c} {mask[:, :, i].mean():.0%}" for i, c in enumerate(group.components))
        out.add_row(f"  {group.name}", shares)
    out.add_row(
        "MACs (with attention matmuls)",
        f"{macs / 1e12:.4f} T of {full / 1e12:.4f} T: {full / macs:.2f}x fewer",
    )
    out.add_row("MACs (linear layers, ECAD)", f"{linear / 1e12:.4f} T of {linear_full / 1e12:.4f} T")
    out.add_row(
        "peak cache",
        f"{memory.peak_tensors} outputs, {memory.peak_bytes / 2**20:.1f} MiB "
        f"(storing every output: {memory_all.peak_tensors}, {memory_all.peak_bytes / 2**20:.1f} MiB)",
    )
    out.add_row("steps computing (share)", " ".join(f"{f:.2f}" for f in sched.step_compute_fraction()))
    console.print(out)
    if plot:
        from .plots import mask_heatmap

        mask_heatmap(sched, plot)
        console.print(f"wrote {plot}")


@app.command()
@friendly
def heuristic(
    kind: Annotated[str, typer.Argument(help=f"one of {', '.join(HEURISTICS)}, or 'all'")],
    model: ModelOption = "digits",
    out: Annotated[Path, typer.Option(help="output JSON file, or folder with 'all'")] = Path("schedule.json"),
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    n: Annotated[int, typer.Option(help="interval N (fora, evenly-spaced, attention-every)")] = 2,
    gate_step: Annotated[int, typer.Option(help="TGATE gate step")] = 10,
    sa_every: Annotated[int, typer.Option(help="TGATE: recompute self-attention every k steps after the gate")] = 1,
    component: Annotated[str, typer.Option(help="component for evenly-spaced (e.g. attn1, attn2, ff)")] = "ff",
) -> None:
    """Write hand-made schedules (FORA, TGATE-like, evenly spaced, SA+CA every N) for a model."""
    spec = get_model(model)
    groups, num_steps = block_groups(spec), steps or spec.default_steps
    meta = schedule_metadata(spec)
    if kind == "all":
        made = [s.with_metadata(**meta) for s in all_heuristics(groups, num_steps)]
        for schedule in made:
            save_schedule(_with_macs(schedule, spec), out / f"{schedule.name}.json")
        console.print(f"wrote {len(made)} schedules to {out}/")
        return
    if kind not in HEURISTICS:
        raise UsageError(f"unknown heuristic '{kind}'; use one of {', '.join(HEURISTICS)} or 'all'")
    params = {
        "fora": {"n": n},
        "evenly-spaced": {"component": component, "n": n},
        "attention-every": {"n": n},
        "tgate": {"gate_step": gate_step, "self_attention_every": sa_every},
        "no-cache": {},
    }[kind]
    schedule = HEURISTICS[kind](groups, num_steps, **params).with_metadata(**meta)
    save_schedule(_with_macs(schedule, spec), out)
    console.print(f"wrote {out}: {schedule.name}, compute fraction {schedule.compute_fraction:.1%}")


@app.command()
@friendly
def convert(
    source: Annotated[Path, typer.Argument(help="schedule JSON (ours or ECAD's)")],
    target: Annotated[Path, typer.Argument(help="output JSON")],
    to: Annotated[str, typer.Option(help="'ecad-search' (our format) or 'cache-dit'")] = "ecad-search",
    threshold: Annotated[float, typer.Option(help="cache-dit: compute a step when this share computes")] = 0.5,
) -> None:
    """Convert an ECAD file to our format, or project a schedule onto a cache-dit steps mask."""
    schedule = load_schedule(source)
    if to == "ecad-search":
        save_schedule(schedule, target)
    elif to == "cache-dit":
        config = to_cache_dit(schedule, threshold=threshold)
        write_atomic(target, json.dumps(config, indent=1) + "\n")
    else:
        raise UsageError(f"unknown target format '{to}'; use 'ecad-search' or 'cache-dit'")
    console.print(f"wrote {target}")


def _with_macs(schedule: CacheSchedule, spec: ModelSpec) -> CacheSchedule:
    macs = estimate_macs(schedule, spec)
    figure = {
        "value": macs,
        "unit": "MAC",
        "definition": "transformer MACs of one generation (linear layers + attention matmuls), "
        f"{spec.transformer_rows(schedule.guidance_scale)} row(s) per image, at the schedule's resolution",
    }
    return schedule.with_metadata(metrics={**schedule.metrics, "macs": figure})


def _viewable(image: Any) -> Any:
    """Small images (the digits model makes 8×8) are upscaled so a person can see them."""
    from PIL import Image

    factor = max(1, 256 // max(image.size))
    return image.resize((image.size[0] * factor, image.size[1] * factor), Image.NEAREST) if factor > 1 else image


def _png_bytes(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    errors.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _quiet_libraries() -> None:
    """Our warnings as one line each; the libraries' deprecation chatter is not the user's business."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module=r"(huggingface_hub|diffusers|transformers|torch)(\.|$)")
    warnings.showwarning = _show_warning


def main() -> None:
    app()
