"""Where a run stands, read from its database alone: the same for a search in a terminal and a cluster job.

No model or Ray is needed: generation, evaluations done and failed on its calibration images, hypervolume,
front size and, while it runs, the time left at the median pace of its generations so far.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..store import RunInfo, Store


@dataclass(frozen=True)
class RunStanding:
    name: str
    status: str
    generations_done: int
    generations_planned: int | None
    evaluations: int
    failed: int
    hypervolume: float | None
    front_size: int
    seconds_left: float | None

    def generation(self) -> str:
        planned = f"/{self.generations_planned}" if self.generations_planned else ""
        return f"{self.generations_done}{planned}"

    def eta(self) -> str:
        if self.seconds_left is None:
            return "-"
        minutes = self.seconds_left / 60
        return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def standing(store: Store, run: RunInfo) -> RunStanding:
    generations = store.generations(run.name)
    last = generations[-1] if generations else None
    left = None
    if run.status == "running" and run.generations_planned and generations:
        pace = statistics.median(g.wall_time_s for g in generations)
        left = max(0, run.generations_planned - run.generations_done) * pace
    return RunStanding(
        name=run.name,
        status=run.status,
        generations_done=run.generations_done,
        generations_planned=run.generations_planned,
        evaluations=store.count_evaluations(run.eval_key),
        failed=store.count_failures(run.eval_key),
        hypervolume=last.hypervolume if last else None,
        front_size=len(last.archive) if last else 0,
        seconds_left=left,
    )
