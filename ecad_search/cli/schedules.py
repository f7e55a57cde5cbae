"""`schedules`, `describe`, `heuristic`, `convert` and `models`: schedules and models, without loading a pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..models import block_groups, check_schedule_fits, get_model, model_names
from ..options import check_schedule_steps
from ..text import macs_text
from .common import ModelOption, UsageError, app, console, friendly, metadata_of, needs, spec_at, with_macs


@app.command()
@friendly
def models() -> None:
    """List the registered models and the search's defaults for each."""
    table = Table("name", "steps", "size", "cfg", "metric", "objective", "what")
    table.columns[0].no_wrap = table.columns[4].no_wrap = True
    for name in model_names():
        spec = get_model(name)
        table.add_row(
            name,
            str(spec.default_steps),
            f"{spec.resolution} px",
            f"{spec.guidance_scale:g}",
            spec.metric,
            spec.objective,
            f"{spec.description} ({spec.dtype})",
        )
    console.print(table)


@app.command()
@friendly
def schedules() -> None:
    """List the shipped schedules: give a name wherever a schedule file goes (`load_schedule` too)."""
    from ..formats import load_schedule, shipped_schedules

    table = Table("name", "steps", "computes", "fill", "made by")
    for name in shipped_schedules():
        schedule = load_schedule(name)
        made_by = schedule.provenance.get("method", "")
        table.add_row(name, str(schedule.num_steps), f"{schedule.compute_fraction:.0%}", schedule.fill, made_by)
    console.print(table)


@app.command()
@friendly
def describe(
    schedule: Annotated[Path, typer.Argument(help="schedule JSON (ours or ECAD's)")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="override the schedule's model")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG heat map of the mask")] = None,
) -> None:
    """Shape, compute fraction, fill, MACs and peak cache memory of a schedule."""
    import numpy as np

    from ..cost import cache_memory, estimate_macs, resolve_spec
    from ..formats import load_schedule
    from ..schedule import CacheSchedule

    sched = load_schedule(schedule)
    spec = resolve_spec(model, sched)
    check_schedule_fits(sched, spec, str(schedule))
    plain = CacheSchedule.all_compute(sched.groups, sched.num_steps, **metadata_of(spec))
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
    fills = {"reuse": "reuse the last computed output"}
    out.add_row("fill", fills.get(sched.fill, f"Taylor forecast of order {sched.forecast_order} (MACs include it)"))
    for group in sched.groups:
        mask = sched.mask(group.name)
        shares = ", ".join(f"{c} {mask[:, :, i].mean():.0%}" for i, c in enumerate(group.components))
        out.add_row(f"  {group.name}", shares)
    out.add_row("MACs (with attention matmuls)", f"{macs_text(macs)} of {macs_text(full)}: {full / macs:.2f}x fewer")
    out.add_row("MACs (linear layers, ECAD)", f"{macs_text(linear)} of {macs_text(linear_full)}")
    out.add_row(
        "peak cache",
        f"{memory.peak_tensors} outputs, {_mib(memory.peak_bytes)} "
        f"(storing every output: {memory_all.peak_tensors}, {_mib(memory_all.peak_bytes)})",
    )
    out.add_row("steps computing (share)", " ".join(f"{f:.2f}" for f in sched.step_compute_fraction()))
    console.print(out)
    if plot:
        needs("search")
        from ..plots import mask_heatmap

        mask_heatmap(sched, plot)
        console.print(f"wrote {plot}")


@app.command()
@friendly
def heuristic(
    kind: Annotated[str, typer.Argument(help="fora, tgate, evenly-spaced, attention-every, no-cache, or 'all'")],
    model: ModelOption = "digits",
    out: Annotated[Path, typer.Option(help="output JSON file, or folder with 'all'")] = Path("schedule.json"),
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    n: Annotated[int, typer.Option(help="interval N (fora, evenly-spaced, attention-every)")] = 2,
    gate_step: Annotated[int, typer.Option(help="TGATE gate step")] = 10,
    sa_every: Annotated[int, typer.Option(help="TGATE: recompute self-attention every k steps after the gate")] = 1,
    component: Annotated[str, typer.Option(help="component for evenly-spaced (e.g. attn1, attn2, ff)")] = "ff",
) -> None:
    """Write hand-made schedules (FORA, TGATE-like, evenly spaced, SA+CA every N) for a model."""
    from ..formats import save_schedule
    from ..heuristics import FAMILIES, all_heuristics

    spec = get_model(model)
    groups = block_groups(spec)
    num_steps = spec.default_steps if steps is None else check_schedule_steps(steps)
    meta = metadata_of(spec)
    if kind == "all":
        made = [s.with_metadata(**meta) for s in all_heuristics(groups, num_steps)]
        for schedule in made:
            save_schedule(with_macs(schedule, spec), out / f"{schedule.name}.json")
        console.print(f"wrote {len(made)} schedules to {out}/")
        return
    if kind not in FAMILIES:
        raise UsageError(f"unknown heuristic '{kind}'; use one of {', '.join(FAMILIES)} or 'all'")
    params = {
        "fora": {"n": n},
        "evenly-spaced": {"component": component, "n": n},
        "attention-every": {"n": n},
        "tgate": {"gate_step": gate_step, "self_attention_every": sa_every},
        "no-cache": {},
    }[kind]
    schedule = FAMILIES[kind](groups, num_steps, **params).with_metadata(**meta)
    save_schedule(with_macs(schedule, spec), out)
    console.print(f"wrote {out}: {schedule.name}, compute fraction {schedule.compute_fraction:.1%}")


TARGETS = ("ecad-search", "cache-dit", "cache-dit-yaml")


@app.command()
@friendly
def convert(
    source: Annotated[Path, typer.Argument(help="schedule JSON (ours or ECAD's) or a shipped name")],
    target: Annotated[Path, typer.Argument(help="output file")],
    to: Annotated[
        str, typer.Option(help="'ecad-search' (our JSON), 'cache-dit' (JSON) or 'cache-dit-yaml'")
    ] = "ecad-search",
    steps: Annotated[
        int | None, typer.Option(help="carry the schedule to this many steps (by the scheduler's timesteps)")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="--steps: the model whose scheduler maps (default: the file's)")
    ] = None,
    threshold: Annotated[float, typer.Option(help="cache-dit: compute a step when this share computes")] = 0.5,
) -> None:
    """Convert a schedule: ECAD's to ours, ours to another step count, or a cache-dit config."""
    from ..files import write_atomic
    from ..formats import cache_dit_yaml, dumps, load_schedule, to_cache_dit

    if to not in TARGETS:
        raise UsageError(f"unknown target format '{to}'; use one of {', '.join(TARGETS)}")
    if steps is not None:
        check_schedule_steps(steps)
    if model is not None and steps is None:
        raise UsageError("--model says whose scheduler maps the steps: give it with --steps")
    schedule = load_schedule(source)
    if steps is not None:
        schedule = _retimed(schedule, steps, model)
    if to == "ecad-search":
        text = dumps(schedule)
    elif to == "cache-dit":
        text = json.dumps(to_cache_dit(schedule, threshold=threshold), indent=1) + "\n"
    else:
        text = cache_dit_yaml(schedule, threshold=threshold)
    write_atomic(target, text)
    console.print(f"wrote {target}")


def _retimed(schedule: Any, steps: int, model: str | None) -> Any:
    """The schedule at `steps` steps of its model's scheduler (or `model`'s), with its MACs counted anew."""
    if model is None and schedule.model is None:
        raise UsageError("the schedule names no model, so no scheduler to map its steps by: give --model")
    spec = spec_at(model or schedule.model.name)
    check_schedule_fits(schedule, spec)
    from ..retime import retime_for_model

    return with_macs(retime_for_model(schedule, spec, steps), spec)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
