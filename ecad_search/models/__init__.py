"""The model registry: names such as `pixart-alpha`, `pixart-sigma`, `flux-dev`, `digits`, or a local folder.

Each module of this package that defines `FAMILY` (a `ModelFamily`) and `SPECS` (its `ModelSpec`s) is a
model adapter; the registry collects them, so adding a model family touches no other file. Adapters import
torch and diffusers only inside the functions that need them, so listing models, reading schedules and
making heuristic ones start instantly.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from ..schedule import BlockGroup, CacheSchedule, ModelRef, ScheduleError
from .base import ModelFamily, ModelNotAvailableError, ModelSpec, require_model

__all__ = [
    "ModelFamily",
    "ModelNotAvailableError",
    "ModelSpec",
    "block_groups",
    "check_schedule_fits",
    "get_family",
    "get_model",
    "model_names",
    "require_model",
    "schedule_metadata",
]


class UnknownModelError(ValueError):
    """The name is neither a registered model nor a diffusers pipeline folder."""


@cache
def _adapters() -> tuple[dict[str, ModelFamily], dict[str, ModelSpec]]:
    families: dict[str, ModelFamily] = {}
    specs: dict[str, ModelSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, ModelFamily):
            families[family.name] = family
            specs.update({spec.name: spec for spec in getattr(module, "SPECS", ())})
    return families, specs


def model_names() -> list[str]:
    return sorted(_adapters()[1])


def get_family(spec_or_name: ModelSpec | str) -> ModelFamily:
    name = spec_or_name.family if isinstance(spec_or_name, ModelSpec) else spec_or_name
    return _adapters()[0][name]


def get_model(name_or_path: str | Path) -> ModelSpec:
    """A registered model by name, or a spec read from a local diffusers pipeline folder."""
    specs = _adapters()[1]
    if str(name_or_path) in specs:
        return specs[str(name_or_path)]
    folder = Path(name_or_path).expanduser()
    if (folder / "model_index.json").is_file():
        return local_spec(folder)
    raise UnknownModelError(
        f"unknown model '{name_or_path}': use one of {', '.join(model_names())} "
        "or the path of a diffusers pipeline folder (with model_index.json)"
    )


def local_spec(folder: Path) -> ModelSpec:
    """Describe a saved diffusers pipeline: family from its pipeline class, architecture from its configs."""
    index = _read_json(folder / "model_index.json")
    pipeline_class = index.get("_class_name", "")
    family = next((f for f in _adapters()[0].values() if pipeline_class in f.pipeline_classes), None)
    if family is None:
        raise UnknownModelError(f"{folder}: pipeline class '{pipeline_class}' is not supported by any model family")
    template = next((s for s in _adapters()[1].values() if s.family == family.name), None)
    config = _read_json(folder / "transformer" / "config.json")
    vae_scale = _vae_scale_factor(folder, template.vae_scale_factor if template else 8)
    text_tokens = _tokenizer_length(folder, family.default_text_tokens)
    base = template or ModelSpec(name="", family=family.name, description="", transformer_config={}, text_tokens=0)
    sample_size = config.get("sample_size")
    return replace(
        base,
        name=str(folder),
        description=f"local {pipeline_class} at {folder}",
        transformer_config=config,
        text_tokens=text_tokens,
        resolution=int(sample_size * vae_scale) if sample_size else base.resolution,
        vae_scale_factor=vae_scale,
        transformer_id=None,
        pipeline_id=str(folder),
        pipeline_class=pipeline_class,
        how_to_get=f"Check that {folder} is a complete diffusers pipeline folder",
        resolutions=(),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UnknownModelError(f"cannot read {path}: {err}") from err


def _vae_scale_factor(folder: Path, default: int) -> int:
    path = folder / "vae" / "config.json"
    if not path.is_file():
        return default
    return 2 ** (len(_read_json(path).get("block_out_channels", [0, 0, 0, 0])) - 1)


def _tokenizer_length(folder: Path, default: int) -> int:
    """The text length the transformer sees: the last tokenizer's `model_max_length` when it is set."""
    for name in ("tokenizer_2", "tokenizer"):
        path = folder / name / "tokenizer_config.json"
        if path.is_file():
            length = _read_json(path).get("model_max_length")
            if isinstance(length, int) and 0 < length < 100_000:
                return min(length, default) if default else length
    return default


def block_groups(spec: ModelSpec) -> tuple[BlockGroup, ...]:
    """The block groups of a model, read from its architecture config by its family (no weights, no import)."""
    return get_family(spec).block_groups(spec.transformer_config)


def check_schedule_fits(schedule: CacheSchedule, spec: ModelSpec, source: str = "the schedule") -> None:
    """Refuse a schedule made for another model, saying which model it is for and how to get one for this."""
    if schedule.groups == block_groups(spec):
        return
    made_for = f"for {schedule.model.name}" if schedule.model else "for another model"
    layout = ", ".join(f"{g.num_blocks} {g.name}" for g in schedule.groups)
    wanted = ", ".join(f"{g.num_blocks} {g.name}" for g in block_groups(spec))
    raise ScheduleError(
        f"{source} is {made_for} ({layout}), but {spec.name} has {wanted}; make one for this model with "
        f"`ecad-search heuristic fora --model {spec.name}` or export one from a search on it"
    )


def schedule_metadata(spec: ModelSpec) -> dict[str, Any]:
    """Fields a schedule made for this model carries: model reference, resolution and guidance."""
    return {
        "model": ModelRef(spec.name, spec.family, spec.transformer_id or spec.pipeline_id),
        "height": spec.resolution,
        "width": spec.resolution,
        "guidance_scale": spec.guidance_scale,
    }
