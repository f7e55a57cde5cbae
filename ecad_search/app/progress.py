"""What a person sees while a search runs, in a terminal of any width from 80 columns, or in a log.

In a terminal: two bars with their counts (generations, candidates of the current generation), then the
state of the search on its own short lines, so nothing is pushed off screen at 80 columns. Anywhere else (a
pipe, a file, a batch job's log): one plain line per generation, never wrapped, so every number stays whole
and the log can be read with grep.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ..pool import PoolStatus
from ..search.driver import GenerationReport
from ..search.run import SearchObserver, Standing

if TYPE_CHECKING:
    from ..search.run import SearchRun

BAR_WIDTH = 28


def counts(report: GenerationReport) -> str:
    failed = f" · failed {report.failed}" if report.failed else ""
    return f"new {report.evaluated} · database {report.from_database} · duplicates {report.duplicates}{failed}"


class SearchProgress(SearchObserver):
    """Progress of one search invocation, an observer of its run; use as a context manager around it."""

    def __init__(
        self,
        console: Console,
        generations: int,
        population: int,
        first: int = 0,
        workers: Callable[[], PoolStatus] | None = None,
    ) -> None:
        self.console = console
        self.generations = generations
        self.workers = workers
        self.live = console.is_terminal and not console.quiet
        self._status = Text("", no_wrap=True, overflow="ellipsis")
        self._workers = Text("", no_wrap=True, overflow="ellipsis")
        self._standing = ""
        self._bars = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(bar_width=BAR_WIDTH),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._generation_task = self._bars.add_task("generation", total=generations, completed=first)
        self._candidate_task = self._bars.add_task("candidate", total=population)
        self._display = Live(
            Group(self._bars, self._workers, self._status), console=console, transient=False, auto_refresh=True
        )

    def __enter__(self) -> SearchProgress:
        if self.live:
            self._display.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.live:
            self._bars.update(self._candidate_task, visible=False)
            self._display.__exit__(kind, error, trace)

    def phase(self, text: str) -> None:
        """What is being done outside the generations (FORA baselines, held-out scoring): in a terminal only,
        in place of the search's state until the next `note` or generation."""
        if self.live:
            self._bars.update(self._candidate_task, visible=False)
            self._status.plain = text

    def note(self, text: str) -> None:
        """A line that stays, above the bars in a terminal; the search's state comes back below them."""
        self.console.print(text, soft_wrap=True, highlight=False)
        if self.live:
            self._bars.update(self._candidate_task, visible=True)
            self._status.plain = self._standing

    def candidate_scored(self, settled: int, total: int) -> None:
        """`settled` of the generation's `total` candidates are scored (or found, or failed)."""
        if self.live:
            self._bars.update(self._candidate_task, completed=settled, total=total)
            if self.workers:
                self._workers.plain = self.workers().line()

    def generation_done(self, run: SearchRun, report: GenerationReport, standing: Standing) -> None:
        head, trade = standing.lines()
        if self.live:
            self._bars.update(self._generation_task, completed=report.index + 1)
            self._bars.reset(self._candidate_task)
            self._standing = f"{head}\n{trade}\n{counts(report)}"
            self._status.plain = self._standing
            return
        replayed = " (from the database)" if report.replayed else ""
        workers = f" · {self.workers().line()}" if self.workers else ""
        self.console.print(
            f"generation {report.index + 1}/{self.generations}{replayed}: {head} · {counts(report)} · "
            f"{report.wall_time_s:.1f} s · {trade}{workers}",
            soft_wrap=True,
            highlight=False,
        )

    def run_ended(self, run: SearchRun, status: str, message: str) -> None:
        if message:
            self.console.print(f"run {run.prepared.run} {message}", soft_wrap=True, highlight=False)
