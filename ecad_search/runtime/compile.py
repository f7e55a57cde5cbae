"""Regional compilation that schedules and policies run on without recompiling.

A schedule decides per step, in Python, whether each component runs; traced by Dynamo, that decision is a
guard on the step (`compute[step, block, component]`), so a compiled transformer recompiles every step until
Dynamo's limit and then falls back to eager. Compiling each cacheable component instead (regional
compilation, as diffusers recommends for repeated blocks) keeps every decision outside the compiled code:
the hooks call a compiled forward or skip it. The components of one class share one graph (their parameters
are graph inputs), so a PixArt transformer compiles three graphs (attn1, attn2, ff) whatever its depth, and
no schedule, step or policy changes them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.blocks import component_modules, discover_block_groups
from ..schedule import ScheduleError
from .apply import target_transformer


def compile_components(target: Any, **options: Any) -> int:
    """Compile every cacheable component of a pipeline's transformer (or of a bare transformer) in place, with
    `torch.compile(**options)`; returns how many. Call it before `apply_schedule` or `apply_policy`: their
    hooks then wrap the compiled forwards, and removing them leaves the compiled forwards in place."""
    transformer = target_transformer(target)
    modules = component_modules(transformer, discover_block_groups(transformer)).values()
    if any(hasattr(module, "_diffusers_hook") for module in modules):
        raise ScheduleError("a schedule or policy is applied to this transformer: compile its components first")
    for module in modules:
        module.forward = torch.compile(module.forward, **options)
    return len(modules)
