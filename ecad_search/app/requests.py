"""Typed requests: what a search, a budget search and a compare are, as plain values (no torch, so the
command line builds them instantly). `app.prepare` and `app.compare` check them and raise `FieldError`s
that name their fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import FieldError


@dataclass(frozen=True)
class SearchRequest:
    """Everything a run is; all but `WHERE_IT_RUNS` (how long, what is reported, where it runs: in-process or
    on `workers` Ray actors, locally or at `ray_address`) identify the run in the database.

    `None` means the model's default (its registry entry) or the prompt set's held-out companion. `held_out`
    says which schedules the run scores on the held-out images: "rivals" (each FORA baseline and the front's
    best schedule at no more MACs: the schedules its claims are about) or "front" (the whole final front as
    well). `guard` is
    the selection-bias guard (docs/search.md): "confirm" re-scores every would-be front member on fresh seeds
    and pools the scores; "paired" puts a schedule forward against a FORA baseline only when its lead on the
    search's images is beyond noise (a paired 95 % interval); "both" does both; "none" trusts the calibration
    images alone. `prefix_memory` (MiB) bounds what an evaluation (in-process, or on each worker) keeps so
    that candidates sharing their first steps compute them once (`runtime.prefix`); it changes no image.
    `objective` is what NSGA-II minimises beside cost (`families.OBJECTIVES`: the metric's loss, or fidelity
    to the uncached images); `adherence_floor` (points) makes a schedule whose images show the prompt less
    often than that infeasible; `margins` (family, value) set the claims' non-inferiority margins.
    `strategy` (`STRATEGIES`): "evolve" runs NSGA-II from FORA, the heuristic families and random masks;
    "construct" scores the front built from one calibration pass (`construct`) and stops; "refine" runs
    NSGA-II from that front, FORA and the rest, with the fill in the genome.
    """

    model: str
    generations: int
    metric: str | None = None
    preset: str = "default"
    population: int | None = None
    prompts: str | None = None
    images_per_prompt: int | None = None
    held_out_prompts: str | None = None
    held_out_images_per_prompt: int | None = None
    guard: str | None = None
    held_out: str = "rivals"
    steps: int | None = None
    resolution: int | None = None
    guidance: float | None = None
    cost: str = "macs"
    seed: int = 0
    batch_size: int | None = None
    db: str = "sqlite:///ecad-search.db"
    run: str | None = None
    out: str = "runs"
    device: str = "auto"
    workers: int = 0
    ray_address: str | None = None
    gpus_per_worker: float = 1.0
    prefix_memory: int = 1024
    objective: str | None = None
    adherence_floor: float | None = None
    margins: tuple[tuple[str, float], ...] = ()
    strategy: str = "evolve"

    def check(self) -> SearchRequest:
        """This request, or a one-line `FieldError` for the first field that is wrong whatever the model: counts,
        choices, margins and the database (its folder exists; nothing is created). Needs no torch, so a bad
        option is answered at once, before any model or library loads."""
        from ..options import (
            MAX_GENERATIONS,
            MAX_PREFIX_MIB,
            MAX_WORKERS,
            check_guidance,
            check_number,
            check_range,
            check_schedule_steps,
            check_seed,
        )
        from ..store import Store
        from ..verdict import claim_margins

        check_range("generations", self.generations, 1, MAX_GENERATIONS)
        check_seed(self.seed)
        check_range("workers", self.workers, 0, MAX_WORKERS)
        check_range("prefix_memory", self.prefix_memory, 0, MAX_PREFIX_MIB, "MiB; 0 shares no prefix")
        if not 0 < self.gpus_per_worker <= 8:
            raise FieldError(f"`gpus_per_worker` must be above 0 and at most 8, got {self.gpus_per_worker}")
        _check_choice("guard", self.guard, GUARDS)
        _check_choice("held_out", self.held_out, HELD_OUT_SCOPES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        if self.steps is not None:
            check_schedule_steps(self.steps)
        if self.guidance is not None:
            check_guidance(self.guidance)
        if self.adherence_floor is not None:
            check_number("adherence_floor", self.adherence_floor, 0.0, 100.0)
        claim_margins(self.margins)
        Store.validate_url(self.db)
        return self

    def identity(self) -> dict[str, Any]:
        """What identifies the run; the options added since runs were first stored count only when they differ
        from what every older run did, so an older run resumes under the same identity."""
        fields = {k: v for k, v in asdict(self).items() if k not in WHERE_IT_RUNS}
        return {k: v for k, v in fields.items() if k not in ADDED_LATER or v not in (None, ADDED_LATER[k])}


# What a run does not depend on: how long it goes, what it reports (`margins` judge its claims), and where it runs.
WHERE_IT_RUNS = (
    "generations", "held_out", "db", "out", "device", "workers", "ray_address", "gpus_per_worker", "prefix_memory",
    "margins",
)  # fmt: skip
# Options added since runs were first stored, with what every older run did.
ADDED_LATER = {"objective": "quality", "adherence_floor": None, "strategy": "evolve"}
STRATEGIES = ("evolve", "construct", "refine")
GUARDS = ("both", "confirm", "paired", "none")
HELD_OUT_SCOPES = ("rivals", "front")


def _check_choice(field: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise FieldError(f"unknown `{field}` '{value}': use one of {', '.join(choices)}")


@dataclass(frozen=True)
class BudgetRequest:
    """One schedule at a budget instead of a front: `budget` a fraction of the uncached MACs, or `by_latency`
    of the uncached latency on this device; `moves` annealing moves, then hill climbing; `race` the share of
    the prompts that moves race on first (per-prompt metrics; 0: off)."""

    budget: float
    by_latency: bool = False
    moves: int = 48
    race: float = 0.25

    def check(self, search: SearchRequest) -> BudgetRequest:
        """This request, or a one-line `FieldError` naming the field that cannot work."""
        field, what = ("budget_latency", "latency") if self.by_latency else ("budget", "MACs")
        if not 0 < self.budget < 1:
            raise FieldError(f"`{field}` {self.budget}: give a fraction of the uncached {what} between 0 and 1")
        if self.moves < 1:
            raise FieldError(f"`budget_moves` {self.moves}: give at least 1")
        if not 0 <= self.race < 1:
            raise FieldError(f"`budget_race` {self.race}: give a share of the prompts from 0 (off) to below 1")
        if search.cost != "macs":
            why = "times runs of its own" if self.by_latency else "is a fraction of the uncached MACs"
            raise FieldError(f"`{field}` {why}: leave out `cost` latency")
        return self


@dataclass(frozen=True)
class CompareRequest:
    """Everything a compare is. `methods` None means all; `run` names a search whose front and held-out split
    are used; `prompts` replaces the held-out prompts."""

    model: str
    run: str | None = None
    metric: str | None = None
    schedules: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None
    budgets: tuple[float, ...] = (0.5, 0.35, 0.25, 0.2)
    db: str = "sqlite:///ecad-search.db"
    out: str = "compare"
    prompts: str | None = None
    images_per_prompt: int | None = None
    grid: int = 6
    trials: int = 12
    timing_repeats: int = 3
    seed: int = 0
    device: str = "auto"
    margins: tuple[tuple[str, float], ...] = ()
