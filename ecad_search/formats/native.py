"""Our schedule file: versioned JSON, validated against `schedule.schema.json`, readable by people.

The mask is stored per group and component as one string per step with one character per block, so a
FORA schedule reads as alternating rows of ones and zeros. Version 2 adds `fill`, how skipped components are
filled; a version-1 file is read as `reuse`, what it meant. The encoding is documented in
docs/schedule-format.md.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import numpy as np

from .. import __version__, installed_version
from ..schedule import BlockGroup, CacheSchedule, ModelRef, ScheduleError

FORMAT = "ecad-search.schedule"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MASK_ENCODING = (
    "mask[group][component] is a list with one string per step and one character per block: "
    "'1' computes the component, '0' fills its output from the steps it computed, as `fill` says "
    "(before the adaLN gate; gate and residual are recomputed). Step 0 always computes."
)


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema other tools can validate our files against."""
    return json.loads(resources.files(__package__).joinpath("schedule.schema.json").read_text())


def to_dict(schedule: CacheSchedule) -> dict[str, Any]:
    mask = {
        group.name: {
            component: ["".join("1" if v else "0" for v in m[s, :, c]) for s in range(schedule.num_steps)]
            for c, component in enumerate(group.components)
        }
        for _, group, m in schedule.iter_groups()
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": schedule.name,
        "model": schedule.model.to_dict() if schedule.model else {"name": "", "family": ""},
        "num_steps": schedule.num_steps,
        "height": schedule.height,
        "width": schedule.width,
        "guidance_scale": schedule.guidance_scale,
        "mask_encoding": MASK_ENCODING,
        "fill": schedule.fill,
        "groups": [group.to_dict() for group in schedule.groups],
        "mask": mask,
        "metrics": {name: dict(figure) for name, figure in schedule.metrics.items()},
        "provenance": {**default_provenance(), **schedule.provenance},
    }


def from_dict(data: dict[str, Any], source: str = "schedule") -> CacheSchedule:
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise ScheduleError(f"{source}: format_version {version!r} is not supported (this tool reads {readable})")
    try:
        jsonschema.validate(data, schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "top level"
        raise ScheduleError(f"{source}: invalid schedule at {where}: {err.message}") from None
    groups = tuple(BlockGroup.from_dict(g) for g in data["groups"])
    masks = {g.name: _decode_group(data["mask"], g, int(data["num_steps"]), source) for g in groups}
    extra = set(data["mask"]) - {g.name for g in groups}
    if extra:
        raise ScheduleError(f"{source}: mask has group(s) {sorted(extra)} that are not listed in 'groups'")
    model = data["model"]
    return CacheSchedule(
        groups=groups,
        masks=masks,
        model=ModelRef(model["name"], model["family"], model.get("hub_id")) if model.get("name") else None,
        name=data.get("name", ""),
        height=data.get("height"),
        width=data.get("width"),
        guidance_scale=data.get("guidance_scale"),
        metrics=data.get("metrics", {}),
        provenance=data.get("provenance", {}),
        fill=data.get("fill", "reuse") if version > 1 else "reuse",
    )


def dumps(schedule: CacheSchedule) -> str:
    return json.dumps(to_dict(schedule), indent=1) + "\n"


def default_provenance() -> dict[str, Any]:
    return {
        "tool": "ecad-search",
        "tool_version": __version__,
        "diffusers_version": installed_version("diffusers"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _decode_group(mask: dict[str, Any], group: BlockGroup, steps: int, source: str) -> np.ndarray:
    if group.name not in mask:
        raise ScheduleError(f"{source}: mask has no entry for group '{group.name}'")
    given = mask[group.name]
    unknown = set(given) - set(group.components)
    if unknown:
        raise ScheduleError(
            f"{source}: unknown component(s) {sorted(unknown)} in group '{group.name}'; "
            f"expected {', '.join(group.components)}"
        )
    array = np.zeros((steps, group.num_blocks, len(group.components)), dtype=bool)
    for c, component in enumerate(group.components):
        rows = given.get(component)
        if rows is None:
            raise ScheduleError(f"{source}: group '{group.name}' has no mask for component '{component}'")
        if len(rows) != steps:
            raise ScheduleError(f"{source}: {group.name}.{component} has {len(rows)} steps but num_steps is {steps}")
        for s, row in enumerate(rows):
            if len(row) != group.num_blocks:
                raise ScheduleError(
                    f"{source}: {group.name}.{component} step {s} has {len(row)} characters, "
                    f"expected {group.num_blocks} (one per block)"
                )
            array[s, :, c] = [ch == "1" for ch in row]
    return array
