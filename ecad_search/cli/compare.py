"""`compare` and `policies`: learned schedules against FORA and every online policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..options import check_seed
from .common import ModelOption, UsageError, app, console, friendly, margin_pairs, needs, quiet_libraries, spec_at


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
        str | None,
        typer.Option(help="comma-separated: learned, constructed, refined, fora, fewer-steps, policies (default: all)"),
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
    margin: Annotated[
        list[str] | None,
        typer.Option(help="a claim's non-inferiority margin, FAMILY=VALUE: fidelity=1 (dB), adherence=0.5 (points)"),
    ] = None,
) -> None:
    """Learned schedules, FORA, fewer steps and every online policy on the same held-out images at the same MACs
    budgets: a report, a CSV and a Pareto plot. Evaluations go into the database's memo, so it resumes."""
    needs("search", "compare")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..app.compare import prepare_compare
    from ..app.requests import CompareRequest
    from ..compare.report import claim_rules, write_report
    from ..compare.runner import run_compare
    from ..models import require_model

    try:
        budget_values = tuple(float(b) for b in budgets.split(","))
    except ValueError:
        raise UsageError(f"--budgets {budgets}: give fractions separated by commas, e.g. 0.5,0.35") from None
    config = CompareRequest(
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
        margins=margin_pairs(margin or []),
    )
    require_model(spec_at(model))
    prepared = prepare_compare(config)
    quiet_libraries()
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=None)
        result = run_compare(
            prepared,
            on_scored=lambda setting, _: progress.update(task, advance=1, description=f"{setting.method:>17}"),
            on_planned=lambda total: progress.update(task, total=total),
        )
    paths = write_report(result)
    rules = claim_rules(result)
    wins = " · ".join(f"{b.budget:.0%}: {_winner_text(b, rules)}" for b in result.budgets)
    settings = sum(len(points) for points in result.points.values())
    console.print(f"compare: {len(result.points)} methods, {settings} settings, {result.evaluated} evaluated now")
    console.print(f"lowest loss at each budget (claim over the runner-up): {wins}")
    console.print(f"wrote {paths[0]} (and points.csv, pareto.png beside it)")


def _winner_text(result: Any, rules: Any) -> str:
    from ..compare.report import winner_claim

    if result.winner is None:
        return "-"
    claim = winner_claim(result, rules)
    return f"{result.winner.method} ({'alone' if result.runner_up is None else claim.verdict if claim else '-'})"


@app.command()
@friendly
def policies() -> None:
    """List the online policies and their knobs with the defaults (docs/policies.md gives their sources)."""
    from dataclasses import fields

    from ..policies import policy_config, policy_names

    table = Table("name", "knobs (defaults)")
    table.columns[0].no_wrap = True
    for name in policy_names():
        config = policy_config(name)
        knobs = [f"{f.name}={getattr(config, f.name)!r}" for f in fields(config) if f.name not in ("table",)]
        table.add_row(name, ", ".join(knobs) or "none")
    console.print(table)
