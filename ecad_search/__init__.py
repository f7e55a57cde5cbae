"""ecad-search: learned cache schedules for diffusion transformers.

from ecad_search import load_schedule, apply_schedule, estimate_macs
schedule = load_schedule("pixart-alpha/fora-2")   # shipped, by name; or a schedule file
with apply_schedule(pipe, schedule):
    image = pipe("a red fox in the snow", num_inference_steps=schedule.num_steps).images[0]
print(estimate_macs(schedule) / 1e12, "TMACs")

The names below are imported on first use, so `import ecad_search` (and the command line) does not pay for
torch and diffusers until something needs them.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

__version__ = "0.1.0"


def installed_version(package: str) -> str:
    """A dependency's version from its metadata, without importing it (importing diffusers takes seconds)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


_EXPORTS = {
    "BlockGroup": "schedule",
    "CacheSchedule": "schedule",
    "ScheduleError": "schedule",
    "apply_policy": "policies",
    "apply_schedule": "runtime",
    "cache_memory": "cost",
    "compile_components": "runtime",
    "estimate_macs": "cost",
    "load_policy": "formats.policy",
    "load_schedule": "formats",
    "policy_config": "policies",
    "save_schedule": "formats",
}

__all__ = ["__version__", "installed_version", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
