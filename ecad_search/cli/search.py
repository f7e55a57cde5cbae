"""The root command: `ecad-search --model M [--generations N | --budget F]` searches cache schedules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import UsageError, app, console, friendly, margin_pairs, needs, quiet_libraries, spec_at

if TYPE_CHECKING:
    from ..app.requests import BudgetRequest, SearchRequest


@app.callback(invoke_without_command=True)
def main_form(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registry name or pipeline folder")] = None,
    generations: Annotated[int, typer.Option(help="NSGA-II generations")] = 50,
    population: Annotated[int | None, typer.Option(help="population size (default: the preset's)")] = None,
    preset: Annotated[
        str, typer.Option(help="'default' (ours), 'fast' (ours, smaller and raced) or 'ecad' (the paper's)")
    ] = "default",
    metric: Annotated[
        str | None,
        typer.Option(help="fidelity, frechet, reward, image-reward, clip (default: the model's; `ecad-search models`)"),
    ] = None,
    prompts: Annotated[Path | None, typer.Option(help="calibration prompt file (.txt, .json, .csv)")] = None,
    images_per_prompt: Annotated[
        int | None, typer.Option(help="calibration seeds per prompt (default: the model's)")
    ] = None,
    held_out_prompts: Annotated[
        Path | None, typer.Option(help="held-out prompt file (default: the set's companion, else the same prompts)")
    ] = None,
    held_out_images_per_prompt: Annotated[
        int | None, typer.Option(help="held-out seeds per prompt (default: the model's)")
    ] = None,
    guard: Annotated[
        str | None,
        typer.Option(help="selection-bias guard: both (confirm + paired), confirm (fresh seeds), paired, none"),
    ] = None,
    held_out: Annotated[
        str, typer.Option(help="held-out scoring: rivals (FORA and the front's best at its MACs) or front (all)")
    ] = "rivals",
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square image size in pixels")] = None,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    cost: Annotated[str, typer.Option(help="'macs' (analytic) or 'latency' (measured)")] = "macs",
    seed: Annotated[int, typer.Option(help="seed of the search and of the calibration images")] = 0,
    batch_size: Annotated[
        int | None, typer.Option(help="images per pipeline call (0: all at once; default: the model's)")
    ] = None,
    db: Annotated[str, typer.Option(help="SQLAlchemy URL of the run database")] = "sqlite:///ecad-search.db",
    run: Annotated[str | None, typer.Option(help="run name (default: derived from the options)")] = None,
    out: Annotated[Path, typer.Option(help="output folder; the run writes into OUT/RUN")] = Path("runs"),
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
    workers: Annotated[
        int, typer.Option(help="Ray workers, each with its own pipeline (0: score in this process, no Ray)")
    ] = 0,
    ray_address: Annotated[
        str | None, typer.Option(help="join a Ray cluster: auto or ray://host:port (default: start a local one)")
    ] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per worker on a GPU cluster (0.5: two per GPU)")] = 1.0,
    prefix_memory: Annotated[
        int, typer.Option(help="MiB kept so that masks sharing their first steps compute them once (0: off)")
    ] = 1024,
    objective: Annotated[
        str | None,
        typer.Option(help="what NSGA-II minimises beside cost: quality (the metric) or fidelity (PSNR to uncached)"),
    ] = None,
    adherence_floor: Annotated[
        float | None, typer.Option(help="a schedule must show the prompt at least this often, in % (e.g. 98.5)")
    ] = None,
    margin: Annotated[
        list[str] | None,
        typer.Option(help="a claim's non-inferiority margin, FAMILY=VALUE: fidelity=1 (dB), adherence=0.5 (points)"),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(help="evolve (NSGA-II), construct (one calibration pass, no search) or refine (both)"),
    ] = "evolve",
    budget: Annotated[
        float | None,
        typer.Option(help="instead of a front: the best schedule at this fraction of the uncached MACs, e.g. 0.35"),
    ] = None,
    budget_latency: Annotated[
        float | None,
        typer.Option(help="as --budget, a fraction of the uncached latency on this device (a fitted model), e.g. 0.5"),
    ] = None,
    budget_moves: Annotated[int, typer.Option(help="--budget: annealing moves (then hill climbing)")] = 48,
    budget_race: Annotated[
        float,
        typer.Option(help="--budget: moves race on this share of the prompts first (per-prompt metrics; 0: off)"),
    ] = 0.25,
) -> None:
    """Search cache schedules: `ecad-search --model pixart-alpha --generations 50`.

    Re-running the same command resumes the run from the database; evaluated masks are never evaluated again.
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)
    from ..app.requests import BudgetRequest, SearchRequest

    if budget is not None and budget_latency is not None:
        friendly(_refuse)("give --budget (a share of the MACs) or --budget-latency (of the latency), not both")
    limit = budget if budget_latency is None else budget_latency
    friendly(_search)(
        None if limit is None else BudgetRequest(limit, budget_latency is not None, budget_moves, budget_race),
        SearchRequest(
            model=model,
            generations=generations,
            metric=metric,
            preset=preset,
            population=population,
            prompts=str(prompts) if prompts else None,
            images_per_prompt=images_per_prompt,
            held_out_prompts=str(held_out_prompts) if held_out_prompts else None,
            held_out_images_per_prompt=held_out_images_per_prompt,
            guard=guard,
            held_out=held_out,
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
            workers=workers,
            ray_address=ray_address,
            gpus_per_worker=gpus_per_worker,
            prefix_memory=prefix_memory,
            objective=objective,
            adherence_floor=adherence_floor,
            margins=friendly(margin_pairs)(margin or []),
            strategy=strategy,
        ),
    )


def _refuse(message: str) -> None:
    raise UsageError(message)


def _search(budget: BudgetRequest | None, request: SearchRequest) -> None:
    """A front search, or one schedule at a budget: every field checked before a model loads."""
    from ..models import require_model

    needs("search")
    request.check()
    if budget is not None:
        budget.check(request)
    require_model(spec_at(request.model, request.resolution))
    from ..app.prepare import prepare
    from ..app.search import run_budget_search, run_search
    from ..pool import PoolError

    prepared = prepare(request)
    quiet_libraries()
    try:
        if budget is not None:
            console.print(run_budget_search(prepared, budget, console))
            return
        search_run = run_search(prepared, console)
    except PoolError as err:
        raise UsageError(str(err)) from None
    console.print(search_run.summary())
