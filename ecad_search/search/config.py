"""What a search run is, as the command line gives it: plain values, checked later by `runner.prepare`.

Kept apart from the runner so that the command line can build one without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SearchConfig:
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

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in WHERE_IT_RUNS}


# What a run does not depend on: how long it goes, what it reports, and where it runs.
WHERE_IT_RUNS = (
    "generations", "held_out", "db", "out", "device", "workers", "ray_address", "gpus_per_worker", "prefix_memory"
)  # fmt: skip
GUARDS = ("both", "confirm", "paired", "none")
HELD_OUT_SCOPES = ("rivals", "front")


class SearchOptionError(ValueError):
    """An option that cannot work; reported before anything is written."""
