"""Run a checked search request, a whole front or one schedule at a budget, with the observers a person at a
terminal wants: the progress display and the output writer."""

from __future__ import annotations

from rich.console import Console

from ..formats import save_schedule
from ..options import LARGE_IMAGES_PER_CANDIDATE
from ..pool import make_pool
from ..search.budget import BudgetPlan
from ..search.budget_run import held_out_line, latency_line, latency_split, search_at_budget
from ..search.prepared import PreparedSearch
from ..search.racing import prompt_race
from ..search.run import SearchRun
from ..store import Store
from .outputs import OutputWriter
from .progress import SearchProgress
from .requests import BudgetRequest


def run_search(prepared: PreparedSearch, console: Console | None = None) -> SearchRun:
    """Build the evaluator, open the run and run its generations with a progress display, keeping the output
    folder current; the finished `SearchRun` holds the reports. What each candidate costs is said before
    anything is loaded, in yellow when it is large."""
    console = console or Console()
    for note in prepared.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    settings = prepared.settings
    style = "yellow" if settings.num_images > LARGE_IMAGES_PER_CANDIDATE else "default"
    held_out = prepared.splits.held_out
    console.print(
        f"[{style}]{settings.num_images:,} images per candidate ({len(settings.prompts)} prompts × "
        f"{settings.images_per_prompt} seeds)[/{style}]; held out: {held_out.num_images:,} "
        f"({len(held_out.prompts)} × {held_out.images_per_prompt})",
        soft_wrap=True,
        highlight=False,
    )
    search_run = SearchRun(prepared)
    try:
        workers = (lambda: search_run.pool.status) if search_run.pool.workers else None
        config = prepared.config
        with SearchProgress(console, config.generations, prepared.population, workers=workers) as progress:
            search_run.run([progress, OutputWriter()])
    finally:
        search_run.pool.close()
    return search_run


def run_budget_search(prepared: PreparedSearch, request: BudgetRequest, console: Console | None = None) -> str:
    """The best schedule at or under the request's budget, by local search on the calibration images, judged
    on the held-out images against the best FORA within the budget; writes the schedule to
    OUT/RUN/budget-PERCENT.json (or budget-latency-PERCENT.json) and returns the summary."""
    console = console or Console()
    config, settings = prepared.config, prepared.settings
    budget, by_latency = request.budget, request.by_latency
    plan = BudgetPlan.of(request.moves, race=request.race)
    pool = make_pool(
        prepared.spec, config.device, workers=config.workers, address=config.ray_address,
        gpus_per_worker=config.gpus_per_worker, prefix_mib=config.prefix_memory,
    )  # fmt: skip
    try:
        split = prompt_race(settings, plan.race)
        timed = (latency_split(settings, pool),) if by_latency else ()
        extra = [*((split.race, split.rest) if split else ()), *timed]
        pool.prepare(settings, [*extra, prepared.splits.held_out])
        with Store(config.db) as store, console.status("budget search") as status:
            run = search_at_budget(
                prepared, budget, pool, store, plan,
                on_move=lambda moves, loss: status.update(f"{moves} moves, best loss {loss:.4g}"),
                by_latency=by_latency,
            )  # fmt: skip
    finally:
        pool.close()
    outcome = run.outcome
    measure = "latency" if by_latency else "MACs"
    provenance = {"method": "budget search", "run": prepared.run, "budget": budget, "budget_of": measure}
    kind = "budget-latency" if by_latency else "budget"
    named = outcome.schedule.with_metadata(name=f"{kind}-{budget:.0%}", provenance=provenance)
    path = save_schedule(named, prepared.out / f"{kind}-{round(budget * 100)}.json")
    start, found = outcome.start_record, outcome.record
    dropped = f" ({run.dropped} dropped after their race)" if run.dropped else ""
    lines = [
        f"{measure} budget {budget:.0%}: {outcome.moves} moves from {outcome.start.name} ({start.cost:.1%} MACs, "
        f"search loss {start.quality_loss:.4g}) to {found.cost:.1%} MACs, search loss {found.quality_loss:.4g}",
        f"{run.evaluated} new evaluations{dropped}, {run.images:,} images generated; wrote {path}",
    ]
    if run.latency is not None:
        lines.append(latency_line(run.latency))
    verdict = held_out_line(run)
    if verdict is not None:
        lines.append(verdict)
    return "\n".join(lines)
