"""A search request checked and resolved: every field is checked before anything runs or is written, so a
bad request leaves the database and the output folder untouched. Errors are `FieldError`s naming the
request's fields; the model's defaults fill the fields left unset, so the run's identity names what ran.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from ..errors import FieldError
from ..evaluation import COSTS, EvaluationSettings
from ..families import OBJECTIVES
from ..generation import resolve_device
from ..metrics import get_metric
from ..models import ModelSpec, block_groups, get_family, get_model
from ..options import (
    MAX_BATCH_SIZE,
    MAX_IMAGES_PER_PROMPT,
    MAX_POPULATION,
    RAY_EXTRA,
    check_range,
)
from ..prompts import default_prompt_file, held_out_prompt_file, load_prompts
from ..schedule import CacheSchedule
from ..search.prepared import PreparedSearch
from ..search.presets import Preset, get_preset
from ..search.racing import runnable_preset
from ..search.seeding import check_population_size
from ..search.splits import distinct_prompts, make_splits
from ..store import Store
from .requests import SearchRequest


def prepare(config: SearchRequest) -> PreparedSearch:
    """Validate every option and derive the run's settings; raises one-line errors, writes nothing.

    The model's defaults fill the options left unset, so the run's identity names what actually ran.
    """
    config.check()
    _check_ray(config)
    if config.cost not in COSTS:
        raise FieldError(f"unknown `cost` '{config.cost}': use one of {', '.join(COSTS)}")
    if config.strategy == "construct":
        config = replace(config, generations=1)
    spec = get_model(config.model)
    config = replace(
        config,
        guard=spec.guard if config.guard is None else config.guard,
        batch_size=spec.batch_size if config.batch_size is None else config.batch_size,
    )
    check_range("batch_size", config.batch_size, 0, MAX_BATCH_SIZE, "0 puts all images in one call")
    preset = get_preset(config.preset)
    population = check_range(
        "population", preset.population if config.population is None else config.population, 4, MAX_POPULATION
    )
    images = _images_per_prompt("images_per_prompt", config.images_per_prompt, spec.calibration_images_per_prompt)
    held_out_images = _images_per_prompt(
        "held_out_images_per_prompt", config.held_out_images_per_prompt, spec.held_out_images_per_prompt
    )
    steps = spec.default_steps if config.steps is None else config.steps
    resolution = spec.resolution if config.resolution is None else config.resolution
    get_family(spec).check_resolution(spec, resolution)
    guidance = spec.guidance_scale if config.guidance is None else float(config.guidance)
    metric = config.metric or spec.metric
    get_metric(metric).check(spec)
    objective = config.objective or spec.objective
    if objective not in OBJECTIVES:
        raise FieldError(f"unknown `objective` '{objective}': use one of {', '.join(OBJECTIVES)}")
    config = replace(config, objective=objective)
    _check_images_for_metric(metric, images, held_out_images)
    prompt_file = config.prompts or default_prompt_file(spec.family)
    prompts, notes = _distinct(spec, load_prompts(prompt_file), "calibration")
    held_out_file = config.held_out_prompts or held_out_prompt_file(prompt_file)
    held_out, held_out_notes = (
        _distinct(spec, load_prompts(held_out_file), "held-out") if held_out_file else (prompts, [])
    )
    config = replace(config, device=resolve_device(config.device))
    settings = EvaluationSettings(
        model=spec.name,
        metric=metric,
        prompts=prompts,
        images_per_prompt=images,
        steps=steps,
        guidance_scale=guidance,
        resolution=resolution,
        seed=config.seed,
        cost=config.cost,
        batch_size=config.batch_size,
        objective=objective,
    )
    check_population_size(CacheSchedule.all_compute(block_groups(spec), steps), population)
    run = config.run or _run_name(config, metric, runnable_preset(preset, settings))
    out = Path(config.out) / _safe(run)
    check_writable_folder(out, "out", config.db)
    splits = make_splits(settings, held_out, held_out_images, confirm=config.guard in ("both", "confirm"))
    return PreparedSearch(config, spec, splits, population, run, out, tuple(notes + held_out_notes))


def _check_ray(config: SearchRequest) -> None:
    if config.workers or config.ray_address:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise FieldError(f"`workers` and `ray_address` need Ray, which is not installed: {RAY_EXTRA}") from None


def _images_per_prompt(field: str, given: int | None, default: int) -> int:
    return default if given is None else check_range(field, given, 1, MAX_IMAGES_PER_PROMPT)


def _check_images_for_metric(metric: str, *images_per_prompt: int) -> None:
    needed = get_metric(metric).min_images_per_prompt
    if min(images_per_prompt) < needed:
        raise FieldError(
            f"metric '{metric}' needs at least {needed} seeds per prompt on every split: "
            "raise `images_per_prompt` and `held_out_images_per_prompt`"
        )


def _distinct(spec: ModelSpec, prompts: tuple[str, ...], which: str) -> tuple[tuple[str, ...], list[str]]:
    """Prompts the model sees alike collapsed to one (the digits model sees only the digit), with a note."""
    kept, dropped = distinct_prompts(prompts, get_family(spec).conditioning_key)
    if not dropped:
        return kept, []
    note = (
        f"{len(prompts)} {which} prompts give only {len(kept)} distinct images per seed on {spec.name} (it sees "
        f"the same conditioning for {dropped} of them): using {len(kept)}; add seeds for more distinct images"
    )
    return kept, [note]


def _run_name(config: SearchRequest, metric: str, preset: Preset) -> str:
    """Named by the options and by what the preset is, so that a preset changed by an upgrade starts a new run
    (sharing the old one's evaluations) instead of replaying the old one's generations differently."""
    identity = {**config.identity(), "preset": preset.identity()}
    digest = hashlib.sha256(repr(sorted(identity.items())).encode()).hexdigest()[:8]
    aim = "" if config.objective in (None, "quality") else f"-{config.objective}"
    how = "" if config.strategy == "evolve" else f"-{config.strategy}"
    return f"{Path(config.model).name}-{metric}{aim}{how}-{config.preset}-s{config.seed}-{digest}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_writable_folder(folder: Path, field: str, db: str) -> None:
    """The folder exists and is writable, or can be created, and the database file is not in its way: checked
    before any image is generated (and before the database is created)."""
    database = Store.local_file(db)
    if database is not None and database.absolute() in (folder.absolute(), *folder.absolute().parents):
        raise FieldError(f"`{field}` {folder}: the `db` file {database} is in its way; give another folder")
    for existing in (folder, *folder.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise FieldError(f"`{field}` {folder}: {existing} is a file, not a folder; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FieldError(f"`{field}` {folder}: cannot write in {existing}; give a writable folder")
