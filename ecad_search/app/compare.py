"""A compare request checked and resolved: the model, the held-out split (the named search's own, or the
model's defaults'), the methods and the learned schedules; `FieldError`s name the request's fields, and
nothing is written before every field is checked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..compare.methods import METHODS, OUR_METHODS, learned_settings
from ..compare.runner import PreparedCompare
from ..errors import FieldError
from ..evaluation import run_template
from ..formats import load_schedule
from ..pool import genome_bits
from ..prompts import load_prompts
from ..schedule import CacheSchedule
from ..store import Store
from ..verdict import claim_margins
from .prepare import check_writable_folder, prepare
from .requests import CompareRequest, SearchRequest


def prepare_compare(config: CompareRequest) -> PreparedCompare:
    """Validate every option and find the held-out split and the learned schedules; one-line errors, nothing
    written."""
    methods = config.methods or METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise FieldError(f"`methods`: unknown method '{unknown[0]}': use some of {', '.join(METHODS)}")
    bad = [b for b in config.budgets if not 0 < b <= 1]
    if bad:
        raise FieldError(f"`budgets`: {bad[0]} is not a fraction of the uncached MACs: give values in (0, 1]")
    for field, value, low in (("grid", config.grid, 2), ("trials", config.trials, 1)):
        if value < low:
            raise FieldError(f"`{field}` {value} is too small: give at least {low}")
    claim_margins(config.margins)
    search = _search_config(config)
    prepared = prepare(search)
    config = replace(config, device=prepared.config.device)
    held_out = replace(prepared.splits.held_out, reference_figures=True)
    if config.prompts:
        held_out = replace(held_out, prompts=load_prompts(config.prompts))
    if config.images_per_prompt is not None:
        held_out = replace(held_out, images_per_prompt=config.images_per_prompt)
    template = run_template(prepared.spec, held_out)
    files = [(Path(p), _fitting(load_schedule(p), template, p)) for p in config.schedules]
    front = _front(config, template) if config.run else []
    asked = [m for m in methods if m in OUR_METHODS] if config.methods is not None else []
    if asked and not (front or files):
        raise FieldError(f"the {asked[0]} method needs `run` or `schedules`")
    out = Path(config.out) / f"compare-{_safe(prepared.spec.name)}-{held_out.key()[:8]}"
    check_writable_folder(out, "out", config.db)
    return PreparedCompare(config, prepared.spec, held_out, tuple(methods), tuple(learned_settings(front, files)), out)


def _search_config(config: CompareRequest) -> SearchRequest:
    """The search whose held-out split this compare uses: the named run's own options, else the model's
    defaults."""
    if config.run is None:
        return SearchRequest(
            model=config.model,
            generations=1,
            metric=config.metric,
            db=config.db,
            seed=config.seed,
            device=config.device,
        )
    with Store(config.db, create=False) as store:
        info = store.get_run(config.run)
    if info is None:
        raise FieldError(f"`run`: no run named '{config.run}' in {config.db}; `ecad-search runs` lists them")
    if config.metric is not None and config.metric != info.config.get("metric"):
        raise FieldError(f"run '{config.run}' was scored with another metric: leave out `metric`")
    return SearchRequest(**{**info.config, "generations": 1, "db": config.db, "device": config.device})


def _front(config: CompareRequest, template: CacheSchedule) -> list[CacheSchedule]:
    """The named run's final front, as schedules (from its last recorded generation's archive)."""
    with Store(config.db, create=False) as store:
        info = store.get_run(str(config.run))
        generations = store.generations(str(config.run))
        if info is None or not generations:
            raise FieldError(f"`run` '{config.run}' has no finished generation yet: let it run, then compare")
        records = store.evaluations_for(info.eval_key, list(generations[-1].archive))
    provenance = {"method": "search", "strategy": info.config.get("strategy", "evolve"), "run": config.run}
    return [
        template.with_genome(genome_bits(record.genome), provenance=provenance) for record in records if record.genome
    ]


def _fitting(schedule: CacheSchedule, template: CacheSchedule, path: str) -> CacheSchedule:
    if schedule.groups != template.groups or schedule.num_steps != template.num_steps:
        raise FieldError(
            f"{path} is a {schedule.num_steps}-step schedule for other blocks; compare needs "
            f"{template.num_steps} steps on this model's blocks"
        )
    return template.with_metadata(
        masks=dict(schedule.masks),
        fill=schedule.fill,
        name=schedule.name or Path(path).stem,
        provenance=schedule.provenance,
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name or name)
