"""The `ecad-search` command: search, generate, describe and make schedules, convert formats, list models.

Every user error ends as one line on stderr naming the problem and the fix, with exit code 2, and nothing
half-written: outputs are written to a temporary name and renamed when complete. Light commands (`--help`,
`models`, `runs`, `describe`, `heuristic`, `convert`) import neither torch nor diffusers at start: each
command imports what it uses.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .metrics import MetricNotAvailableError
from .models import ModelNotAvailableError, block_groups, check_schedule_fits, get_family, get_model, model_names
from .options import check_generate_steps, check_guidance, check_schedule_steps, check_seed
from .schedule import ScheduleError
from .text import macs_text

if TYPE_CHECKING:
    from .models.base import ModelSpec
    from .schedule import CacheSchedule

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Learned cache schedules for diffusion transformers (PixArt-α/Σ, FLUX.1, any diffusers DiT).",
)
# Not a terminal (a pipe, a file, a CI log): never hard-wrap a line, so no number is split across two.
console = Console(soft_wrap=not sys.stdout.isatty())
errors = Console(stderr=True, soft_wrap=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="registry name or diffusers pipeline folder")]

# Exit codes of a run stopped by a signal, as shells report them (128 + signal number).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, batch schedulers and Ray), raised like Ctrl-C so every run records how it
    ended on the way out. Typer turns a KeyboardInterrupt into exit code 130, so the handler also notes the
    signal in `_received` for `main` to report it as SIGTERM."""


_received: set[int] = set()


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
            _error(str(err))
            raise typer.Exit(2) from None

    return run


def _error(message: str) -> None:
    errors.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, markup=True)


def _spec(model: str, resolution: int | None = None) -> ModelSpec:
    """The model, at another of its resolutions when asked (PixArt has one checkpoint per size)."""
    spec = get_model(model)
    if resolution is None or resolution == spec.resolution:
        return spec
    get_family(spec).check_resolution(spec, resolution)
    if spec.family == "pixart" and spec.transformer_id:
        from .models.pixart import at_resolution

        return at_resolution(spec, resolution)
    return spec


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
    from .search.config import SearchConfig

    friendly(_search)(
        (budget, budget_latency, budget_moves, budget_race),
        SearchConfig(
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
        ),
    )


def _search(budget_search: tuple[float | None, float | None, int, float], config: Any) -> None:
    from .models.hub import require_model

    budget, latency, moves, race = budget_search
    if budget is not None and latency is not None:
        raise UsageError("give --budget (a share of the MACs) or --budget-latency (of the latency), not both")
    if latency is not None and not 0 < latency < 1:
        raise UsageError(f"--budget-latency {latency}: give a fraction of the uncached latency between 0 and 1")
    by_latency = latency is not None
    budget = latency if by_latency else budget
    if moves < 1:
        raise UsageError(f"--budget-moves {moves}: give at least 1")
    if not 0 <= race < 1:
        raise UsageError(f"--budget-race {race}: give a share of the prompts from 0 (off) to below 1, e.g. 0.25")
    if budget is not None and not 0 < budget < 1:
        raise UsageError(f"--budget {budget}: give a fraction of the uncached MACs between 0 and 1, e.g. 0.35")
    if budget is not None and config.cost != "macs":
        what = "--budget-latency times runs of its own" if by_latency else "--budget is a fraction of the uncached MACs"
        raise UsageError(f"{what}: leave out --cost latency")
    require_model(_spec(config.model, config.resolution))
    from .pool import PoolError
    from .search.runner import prepare, run_budget_search, run_search

    prepared = prepare(config)
    _quiet_libraries()
    try:
        if budget is not None:
            from .search.budget import BudgetPlan

            plan = BudgetPlan.of(moves, race=race)
            console.print(run_budget_search(prepared, budget, plan, console, by_latency=by_latency))
            return
        search_run = run_search(prepared, console)
    except PoolError as err:
        raise UsageError(str(err)) from None
    console.print(search_run.summary())


@app.command()
@friendly
def runs(db: Annotated[str, typer.Option(help="SQLAlchemy URL")] = "sqlite:///ecad-search.db") -> None:
    """List the runs in a database with their status."""
    from .store import Store

    Store.validate_url(db)
    infos = Store(db, create=False).list_runs()
    if not infos:
        console.print(f"no runs in {db}")
    for info in infos:
        console.print(f"[bold]{info.name}[/bold]", highlight=False)
        console.print(
            f"  {info.model} · {info.metric} · seed {info.seed} · [bold]{info.status}[/bold] · "
            f"{info.generations_done} generations · {info.updated_at:%Y-%m-%d %H:%M} UTC",
            highlight=False,
        )


# The dashboard of the cluster's head, where Ray's job server listens.
DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
JobServerOption = Annotated[str, typer.Option("--address", help="the cluster's job server (its dashboard URL)")]


@app.command()
@friendly
def status(
    run: Annotated[str | None, typer.Argument(help="run name (default: every run in the database)")] = None,
    db: Annotated[str, typer.Option(help="SQLAlchemy URL")] = "sqlite:///ecad-search.db",
) -> None:
    """Where runs stand, from the database: local runs and cluster jobs alike."""
    from .search.status import standing
    from .store import Store

    Store.validate_url(db)
    store = Store(db, create=False)
    infos = store.list_runs()
    if run is not None:
        infos = [info for info in infos if info.name == run]
        if not infos:
            raise UsageError(f"no run named '{run}' in {db}; list them with `ecad-search status --db {db}`")
    if not infos:
        console.print(f"no runs in {db}")
        return
    table = Table("run", "status", "gen", "evals", "failed", "HV", "front", "ETA")
    table.columns[0].overflow = "ellipsis"
    for info in infos:
        row = standing(store, info)
        hv = "-" if row.hypervolume is None else f"{row.hypervolume:.4g}"
        cells = (row.generation(), str(row.evaluations), str(row.failed), hv, str(row.front_size), row.eta())
        table.add_row(row.name, row.status, *cells)
    console.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def submit(
    ctx: typer.Context,
    address: JobServerOption = DEFAULT_JOB_SERVER,
) -> None:
    """Submit a search as a Ray job: `ecad-search submit --address http://head:8265 -- --model M ...`.

    The job runs the same command; watch it with `ecad-search status --db URL`. Resubmitting it with the same
    options resumes it from the database.
    """
    from . import jobs

    if "--model" not in ctx.args and "-m" not in ctx.args:
        raise UsageError("give the search's options after `--`, at least --model (and --db on a shared database)")
    try:
        job = jobs.submit(address, list(ctx.args))
    except jobs.JobError as err:
        raise UsageError(str(err)) from None
    console.print(job, highlight=False)


@app.command()
@friendly
def logs(
    job: Annotated[str, typer.Argument(help="job id, as `submit` printed it")],
    address: JobServerOption = DEFAULT_JOB_SERVER,
) -> None:
    """Print a search job's logs (Ray's job logs)."""
    from . import jobs

    try:
        console.print(jobs.logs(address, job), highlight=False, markup=False, end="")
    except jobs.JobError as err:
        raise UsageError(str(err)) from None


@app.command()
@friendly
def stop(
    job: Annotated[str, typer.Argument(help="job id, as `submit` printed it")],
    address: JobServerOption = DEFAULT_JOB_SERVER,
) -> None:
    """Stop a search job; its run is left `interrupted` and resumes when resubmitted."""
    from . import jobs

    try:
        outcome = jobs.stop(address, job)
    except jobs.JobError as err:
        raise UsageError(str(err)) from None
    console.print(f"job {job} {outcome}", highlight=False)


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
    from .formats import save_schedule
    from .search.export import export_from_run, require_run

    require_run(db, run)
    if sum(x is not None and x is not False for x in (max_loss, max_macs, knee_point or None)) != 1:
        raise UsageError("choose exactly one of --max-loss, --max-macs, --knee")
    schedule, on_held_out = export_from_run(db, run, max_loss=max_loss, max_macs=max_macs, knee_point=knee_point)
    save_schedule(schedule, out)
    metrics = schedule.metrics
    held_out = metrics.get("held_out_loss", {}).get("value")
    judged = "chosen on held-out images" if on_held_out else "chosen on the search's images"
    console.print(
        f"wrote {out}: {metrics['macs_fraction']['value']:.1%} of MACs, search loss "
        f"{metrics['quality_loss']['value']:.4f}"
        + (f", held-out loss {held_out:.4f}" if held_out is not None else "")
        + f" ({judged})"
    )


@app.command()
@friendly
def models() -> None:
    """List the registered models and the search's defaults for each."""
    table = Table("name", "steps", "size", "cfg", "metric", "what")
    table.columns[0].no_wrap = table.columns[4].no_wrap = True
    for name in model_names():
        spec = get_model(name)
        table.add_row(
            name,
            str(spec.default_steps),
            f"{spec.resolution} px",
            f"{spec.guidance_scale:g}",
            spec.metric,
            f"{spec.description} ({spec.dtype})",
        )
    console.print(table)


@app.command()
@friendly
def compare(
    model: ModelOption = "digits",
    run: Annotated[str | None, typer.Option(help="a search run: its front, and its held-out images")] = None,
    metric: Annotated[str | None, typer.Option(help="quality metric (default: the run's, else the model's)")] = None,
    schedules: Annotated[
        list[Path] | None, typer.Option("--schedule", help="a schedule file to compare (repeatable)")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated subset: learned, fora and policy names (default: all)")
    ] = None,
    budgets: Annotated[str, typer.Option(help="MACs budgets, fractions of uncached")] = "0.5,0.35,0.25,0.2",
    db: Annotated[str, typer.Option(help="SQLAlchemy URL of the database (the search's)")] = "sqlite:///ecad-search.db",
    out: Annotated[Path, typer.Option(help="output folder; the compare writes OUT/compare-MODEL-KEY")] = Path("runs"),
    prompts: Annotated[Path | None, typer.Option(help="held-out prompt file (default: the search's)")] = None,
    images_per_prompt: Annotated[int | None, typer.Option(help="held-out seeds per prompt")] = None,
    grid: Annotated[int, typer.Option(help="settings per one-knob policy")] = 6,
    trials: Annotated[int, typer.Option(help="Optuna trials per several-knob policy")] = 12,
    timing_repeats: Annotated[int, typer.Option(help="interleaved timing rounds")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the Optuna studies (and of a search without --run)")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Learned schedules, FORA and every online policy on the same held-out images at the same MACs budgets:
    a report, a CSV and a Pareto plot. Evaluations go into the database's memo, so it resumes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .compare.report import write_report
    from .compare.runner import CompareConfig, prepare_compare, run_compare
    from .models.hub import require_model

    try:
        budget_values = tuple(float(b) for b in budgets.split(","))
    except ValueError:
        raise UsageError(f"--budgets {budgets}: give fractions separated by commas, e.g. 0.5,0.35") from None
    config = CompareConfig(
        model=model,
        run=run,
        metric=metric,
        schedules=tuple(str(p) for p in schedules or ()),
        methods=tuple(m.strip() for m in methods.split(",")) if methods else None,
        budgets=budget_values,
        db=db,
        out=str(out),
        prompts=str(prompts) if prompts else None,
        images_per_prompt=images_per_prompt,
        grid=grid,
        trials=trials,
        timing_repeats=timing_repeats,
        seed=check_seed(seed),
        device=device,
    )
    require_model(_spec(model))
    prepared = prepare_compare(config)
    _quiet_libraries()
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=None)
        result = run_compare(
            prepared,
            on_scored=lambda setting, _: progress.update(task, advance=1, description=f"{setting.method:>17}"),
            on_planned=lambda total: progress.update(task, total=total),
        )
    paths = write_report(result)
    wins = " · ".join(f"{b.budget:.0%}: {b.winner.method if b.winner else '-'} ({b.verdict})" for b in result.budgets)
    settings = sum(len(points) for points in result.points.values())
    console.print(f"compare: {len(result.points)} methods, {settings} settings, {result.evaluated} evaluated now")
    console.print(f"best at each budget: {wins}")
    console.print(f"wrote {paths[0]} (and points.csv, pareto.png beside it)")


@app.command()
@friendly
def policies() -> None:
    """List the online policies and their knobs with the defaults (docs/policies.md gives their sources)."""
    from dataclasses import fields

    from .runtime.policy import POLICIES, policy_config

    table = Table("name", "knobs (defaults)")
    table.columns[0].no_wrap = True
    for name in POLICIES:
        config = policy_config(name)
        knobs = [f"{f.name}={getattr(config, f.name)!r}" for f in fields(config) if f.name not in ("table",)]
        table.add_row(name, ", ".join(knobs) or "none")
    console.print(table)


@app.command()
@friendly
def calibrate(
    policy: Annotated[str, typer.Argument(help="teacache, magcache or sencache")],
    model: ModelOption = "digits",
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    resolution: Annotated[int | None, typer.Option(help="square image size in pixels")] = None,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompt file (default: the model's calibration prompts)")] = None,
    out: Annotated[Path | None, typer.Option(help="calibration folder (default: the user cache folder)")] = None,
    refresh: Annotated[bool, typer.Option(help="measure again even when a calibration is stored")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Measure the table a policy needs on this model (once per step count, resolution and guidance) and keep
    it as JSON; `generate --policy` and the evaluator use it, and a second call reuses it."""
    from .calibration import calibratable
    from .calibration import calibrate as measure
    from .generation import GenerationSettings, load_pipeline, resolve_device
    from .models.hub import require_model
    from .prompts import load_prompts

    if policy not in calibratable():
        raise UsageError(f"unknown or uncalibrated policy '{policy}': calibrate one of {', '.join(calibratable())}")
    spec = _spec(model, resolution)
    require_model(spec)
    texts = list(load_prompts(prompts)) if prompts else None
    settings = GenerationSettings.for_model(
        spec,
        steps=None if steps is None else check_generate_steps(steps),
        guidance_scale=None if guidance is None else check_guidance(guidance),
        resolution=resolution,
    )
    _quiet_libraries()
    with console.status(f"calibrating {policy} on {spec.name}"):
        pipe = load_pipeline(spec, device=resolve_device(device))
        result = measure(policy, pipe, spec, settings, folder=out, prompts=texts, refresh=refresh)
    verb = "measured" if result.measured else "reused (same model and settings; --refresh measures again)"
    console.print(f"{policy} on {spec.name}, {settings.steps} steps: {verb}\n{result.path}")


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
    policy: Annotated[
        str | None,
        typer.Option(help="an online policy instead of a schedule: its name (`ecad-search policies`) or a policy JSON"),
    ] = None,
    knob: Annotated[
        list[str] | None, typer.Option("--set", help="a policy knob, KNOB=VALUE (repeatable)", show_default=False)
    ] = None,
    realised: Annotated[Path | None, typer.Option(help="save what the policy ran as a schedule JSON")] = None,
    save_policy: Annotated[Path | None, typer.Option(help="save the policy and its knobs as a policy JSON")] = None,
) -> None:
    """Generate one image, optionally following a schedule or an online policy; print wall time, MACs and the
    fraction saved (for a policy: of what it actually ran, its own arithmetic included). A policy that needs a
    calibration table is calibrated first (once per model and settings; `ecad-search calibrate`)."""
    from .formats import load_schedule
    from .models.hub import require_model

    if policy and schedule:
        raise UsageError("give --schedule or --policy, not both")
    if (knob or realised or save_policy) and not policy:
        raise UsageError("--set, --realised and --save-policy go with --policy")
    policy_settings = _policy(policy, knob or []) if policy else None
    cached = load_schedule(schedule) if schedule else None
    spec = _spec(model, resolution)
    require_model(spec)
    from .cost import estimate_macs
    from .files import write_atomic
    from .generation import GenerationSettings, load_pipeline, resolve_device
    from .generation import generate as run
    from .schedule import CacheSchedule

    if cached:
        check_schedule_fits(cached, spec, str(schedule))
    if cached and steps is not None and steps != cached.num_steps:
        raise UsageError(f"--steps {steps} differs from the schedule's {cached.num_steps} steps; drop --steps")
    settings = GenerationSettings.for_model(
        spec,
        steps=check_generate_steps(steps) if steps is not None else (cached.num_steps if cached else None),
        guidance_scale=None if guidance is None else check_guidance(guidance),
        resolution=resolution,
        seed=check_seed(seed),
    )
    _quiet_libraries()
    plain = CacheSchedule.all_compute(block_groups(spec), settings.steps, **_metadata(spec))
    pipe = load_pipeline(spec, device=resolve_device(device))
    overhead = 0.0
    if policy_settings is not None:
        from .calibration import calibrated
        from .formats.policy import save_policy as write_policy
        from .runtime.policy import apply_policy

        policy_settings = calibrated(policy_settings, pipe, spec, settings)
        with apply_policy(pipe, policy_settings) as handle:
            images, seconds = run(pipe, spec, [prompt], settings)
        cached, overhead = handle.realised_schedule(plain), handle.runs[-1].overhead_macs
        if realised:
            from .formats import save_schedule

            save_schedule(_with_macs(cached, spec), realised)
        if save_policy:
            write_policy(policy_settings, save_policy)
        ran = handle.decisions[-1]
        console.print(
            f"{policy_settings.name}: computed {sum(ran)} of {len(ran)} steps (the others {policy_settings.skipped}), "
            f"{cached.compute_fraction:.1%} of the block components; its own arithmetic {macs_text(overhead)}"
        )
    else:
        images, seconds = run(pipe, spec, [prompt], settings, schedule=cached)
    image = _viewable(images[0])
    write_atomic(out, _png_bytes(image))
    size = {"height": settings.height, "width": settings.width}
    full = estimate_macs(plain, spec, **size)
    used = estimate_macs(cached, spec, **size) + overhead if cached else full
    console.print(f"wrote {out} ({image.size[0]}x{image.size[1]})")
    console.print(f"wall time {seconds:.3f} s; {macs_text(used)}; {1 - used / full:.1%} of MACs saved")
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
    from .files import write_atomic
    from .formats import load_schedule
    from .generation import GenerationSettings, load_pipeline
    from .generation import generate as run
    from .models.digits import DIGIT_PROMPTS, digit_grid

    spec = get_model(model)
    if spec.family != "digits":
        raise UsageError(f"grid draws the ten digits of a digits model; {spec.name} is a {spec.family} model")
    cached = load_schedule(schedule) if schedule else None
    if cached:
        check_schedule_fits(cached, spec, str(schedule))
    settings = GenerationSettings.for_model(spec, steps=cached.num_steps if cached else None, seed=check_seed(seed))
    _quiet_libraries()
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
    import numpy as np

    from .cost import cache_memory, estimate_macs, resolve_spec
    from .formats import load_schedule
    from .schedule import CacheSchedule

    sched = load_schedule(schedule)
    spec = resolve_spec(model, sched)
    check_schedule_fits(sched, spec, str(schedule))
    plain = CacheSchedule.all_compute(sched.groups, sched.num_steps, **_metadata(spec))
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
        from .plots import mask_heatmap

        mask_heatmap(sched, plot)
        console.print(f"wrote {plot}")


@app.command()
@friendly
def profile(
    model: ModelOption = "digits",
    prompts: Annotated[Path | None, typer.Option(help="prompt file (default: the model's calibration prompts)")] = None,
    images_per_prompt: Annotated[int, typer.Option(help="seeds per prompt")] = 4,
    steps: Annotated[int | None, typer.Option(help="denoising steps (default: the model's)")] = None,
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="output PNG heat map (a JSON of the figures is written beside it)")] = Path(
        "change.png"
    ),
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N")] = "auto",
) -> None:
    """How much each block component's output changes between steps: what a learned schedule can exploit."""
    import json

    from .models.hub import require_model
    from .options import MAX_IMAGES_PER_PROMPT, check_range
    from .prompts import default_prompt_file, load_prompts

    spec = get_model(model)
    require_model(spec)
    texts = load_prompts(prompts or default_prompt_file(spec.family))
    check_range("--images-per-prompt", images_per_prompt, 1, MAX_IMAGES_PER_PROMPT)
    num_steps = spec.default_steps if steps is None else check_schedule_steps(steps)
    from .files import write_atomic
    from .generation import GenerationSettings, load_pipeline, resolve_device
    from .generation import generate as run
    from .plots import change_heatmap
    from .runtime.profile import ChangeProfiler

    _quiet_libraries()
    settings = GenerationSettings.for_model(spec, steps=num_steps, seed=check_seed(seed))
    pipe = load_pipeline(spec, device=resolve_device(device))
    batch = [text for text in texts for _ in range(images_per_prompt)]
    with ChangeProfiler(pipe.transformer, block_groups(spec), num_steps) as profiler:
        _, seconds = run(pipe, spec, batch, settings, output_type="pt")
    figures = profiler.profile(len(batch))
    write_atomic(out.with_suffix(".json"), json.dumps({"model": spec.name, **figures.to_dict()}, indent=1))
    title = f"{spec.name}: step-to-step change of each component, {len(batch)} images, {num_steps} steps"
    change_heatmap(figures, out, title)
    console.print(f"wrote {out} and {out.with_suffix('.json')} ({len(batch)} images in {seconds:.1f} s)")


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
    from .formats import save_schedule
    from .heuristics import FAMILIES, all_heuristics

    spec = get_model(model)
    groups = block_groups(spec)
    num_steps = spec.default_steps if steps is None else check_schedule_steps(steps)
    meta = _metadata(spec)
    if kind == "all":
        made = [s.with_metadata(**meta) for s in all_heuristics(groups, num_steps)]
        for schedule in made:
            save_schedule(_with_macs(schedule, spec), out / f"{schedule.name}.json")
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
    import json

    from .files import write_atomic
    from .formats import load_schedule, save_schedule, to_cache_dit

    if to not in ("ecad-search", "cache-dit"):
        raise UsageError(f"unknown target format '{to}'; use 'ecad-search' or 'cache-dit'")
    schedule = load_schedule(source)
    if to == "ecad-search":
        save_schedule(schedule, target)
    else:
        config = to_cache_dit(schedule, threshold=threshold)
        write_atomic(target, json.dumps(config, indent=1) + "\n")
    console.print(f"wrote {target}")


def _policy(name: str, knobs: list[str]) -> Any:
    """The policy's config: a name or a policy file, with `--set KNOB=VALUE` pairs over its knobs (values read as
    JSON where they parse: 0.1, [1, 2])."""
    from .runtime.policy import policy_config

    base: dict[str, Any] = {}
    if name.endswith(".json"):
        from .formats.policy import load_policy

        loaded = load_policy(name)
        name, base = loaded.name, loaded.knobs()
    values: dict[str, Any] = {}
    for pair in knobs:
        key, sign, text = pair.partition("=")
        if not sign or not key:
            raise UsageError(f"--set {pair}: write KNOB=VALUE, e.g. --set threshold=0.1")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return policy_config(name, **{**base, **values})


def _metadata(spec: ModelSpec) -> dict[str, Any]:
    from .models import schedule_metadata

    return schedule_metadata(spec)


def _with_macs(schedule: CacheSchedule, spec: ModelSpec) -> CacheSchedule:
    from .cost import estimate_macs

    macs = estimate_macs(schedule, spec)
    figure = {
        "value": macs,
        "unit": "MAC",
        "definition": "transformer MACs of one generation (linear layers + attention matmuls), "
        f"{spec.transformer_rows(schedule.guidance_scale)} row(s) per image, at the schedule's resolution",
    }
    return schedule.with_metadata(metrics={**schedule.metrics, "macs": figure})


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


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
    errors.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def _quiet_libraries() -> None:
    """The libraries' deprecation chatter is not the user's business; called by the commands that load them."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module=r"(huggingface_hub|diffusers|transformers|torch)(\.|$)")


def _terminate(signum: int, frame: Any) -> None:
    _received.add(signum)
    raise Terminated()


def main(args: list[str] | None = None) -> None:
    """Run the command; usage errors are one line, and Ctrl-C or SIGTERM end it with the shell's exit code."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _terminate)
    command = typer.main.get_command(app)
    click = _click_exceptions()
    try:
        code = command.main(args=args, prog_name="ecad-search", standalone_mode=False)
    except click.NoArgsIsHelpError as err:
        console.print(err.ctx.get_help())
        code = 0
    except click.ClickException as err:
        context = getattr(err, "ctx", None)
        where = context.command_path.replace(context.find_root().info_name, "ecad-search", 1) if context else ""
        _error(f"{err.format_message()} (see `{where or 'ecad-search'} --help`)")
        code = err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
    if signal.SIGTERM in _received:
        _error("terminated (SIGTERM)")
        code = EXIT_TERMINATED
    elif code == EXIT_INTERRUPTED:
        _error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions() -> Any:
    """Click's exceptions as typer raises them: typer ≥ 0.20 vendors click as `typer._click`."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions
