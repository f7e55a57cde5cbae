"""Export a schedule's per-step projection as a cache-dit `steps_computation_mask` config, as a dict or as the
YAML file `cache_dit.load_configs(path)` reads.

cache-dit decides per step, not per block or component, so each step becomes 1 (compute) when at least
`threshold` of its component evaluations compute. Its cached steps still run the first Fn (>= 1) and last Bn
blocks, so they are cheaper than a full step but never a whole-step skip.
"""

from __future__ import annotations

import warnings
from typing import Any

import yaml

from ..schedule import CacheSchedule

CACHE_DIT_WARNING = (
    "cache-dit still runs its Fn first (and Bn last) blocks on cached steps, and decides per step only: "
    "expect less speedup than this schedule's MACs predict"
)


def to_cache_dit(schedule: CacheSchedule, *, threshold: float = 0.5, policy: str = "static") -> dict[str, Any]:
    """A dict that `cache_dit.load_configs` accepts and `cache_dit.enable_cache(pipe, **...)` applies."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if policy not in ("static", "dynamic"):
        raise ValueError(f"policy must be 'static' or 'dynamic', got {policy!r}")
    warnings.warn(CACHE_DIT_WARNING, UserWarning, stacklevel=2)
    steps_mask = [int(f >= threshold) for f in schedule.step_compute_fraction()]
    steps_mask[0] = 1
    warmup = next((i for i, bit in enumerate(steps_mask) if bit == 0), len(steps_mask))
    return {
        "cache_config": {
            "num_inference_steps": schedule.num_steps,
            "steps_computation_mask": steps_mask,
            "steps_computation_policy": policy,
            "Fn_compute_blocks": 1,
            "Bn_compute_blocks": 0,
            "max_warmup_steps": warmup,
            "enable_separate_cfg": False,
        }
    }


def cache_dit_yaml(schedule: CacheSchedule, *, threshold: float = 0.5) -> str:
    """The config of `to_cache_dit` as a YAML file, headed by a comment that names the schedule it came from."""
    config = to_cache_dit(schedule, threshold=threshold)
    source = f"{schedule.name or 'schedule'} {schedule.digest()[:12]}, {schedule.num_steps} steps"
    header = f"# cache-dit config from ecad-search ({source}); cache_dit.enable_cache(pipe, **load_configs(path))\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
