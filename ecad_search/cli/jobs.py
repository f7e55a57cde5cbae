"""`submit`, `logs` and `stop`: searches as Ray jobs on a cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import UsageError, app, console, friendly

DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
JobServerOption = Annotated[str, typer.Option("--address", help="the cluster's job server (its dashboard URL)")]


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
    from .. import jobs

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
    from .. import jobs

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
    from .. import jobs

    try:
        outcome = jobs.stop(address, job)
    except jobs.JobError as err:
        raise UsageError(str(err)) from None
    console.print(f"job {job} {outcome}", highlight=False)
