"""`runs`, `status` and `export`: what a database holds, read without loading a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import UsageError, app, console, friendly, needs


@app.command()
@friendly
def runs(db: Annotated[str, typer.Option(help="SQLAlchemy URL")] = "sqlite:///ecad-search.db") -> None:
    """List the runs in a database with their status."""
    needs("search")
    from ..store import Store

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
@app.command()
@friendly
def status(
    run: Annotated[str | None, typer.Argument(help="run name (default: every run in the database)")] = None,
    db: Annotated[str, typer.Option(help="SQLAlchemy URL")] = "sqlite:///ecad-search.db",
) -> None:
    """Where runs stand, from the database: local runs and cluster jobs alike."""
    needs("search")
    from ..app.status import standing
    from ..store import Store

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
    needs("search")
    from ..app.export import export_from_run, require_run
    from ..formats import save_schedule

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
