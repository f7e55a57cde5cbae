"""How much each block component's output changes from one denoising step to the next.

This is what a cache schedule exploits and FORA ignores: where the relative change is small, reusing the
last output costs little; where it is large, it costs much. FORA treats every block, component and step
alike; a learned schedule can follow this map.

`ChangeProfiler` puts one diffusers `ModelHook` on every scheduled component of an uncached pipeline. Each
call of a component is one step of the current run (the transformer runs once per step, with the guidance
pair in one batch); the hook compares its output with the previous step's, per image, as the relative L1
change ‖oₜ − oₜ₋₁‖₁ / ‖oₜ₋₁‖₁, and averages over images and runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook

from ..models.blocks import component_modules
from ..schedule import BlockGroup
from .apply import add_hook, remove_hooks

PROFILE_HOOK = "ecad_search_profile"


@dataclass(frozen=True)
class ChangeProfile:
    """Mean relative change per group: an array (steps − 1, blocks, components); row s is step s+1 vs s."""

    groups: tuple[BlockGroup, ...]
    num_steps: int
    changes: dict[str, np.ndarray]
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [group.to_dict() for group in self.groups],
            "num_steps": self.num_steps,
            "images": self.images,
            "definition": "mean over images of |o_t - o_(t-1)|_1 / |o_(t-1)|_1 of each component's output, "
            "row s = step s+1 against step s",
            "changes": {name: array.round(6).tolist() for name, array in self.changes.items()},
        }


class _ChangeHook(ModelHook):
    """Runs the component unchanged and measures its output against the previous step's."""

    def __init__(self, profiler: ChangeProfiler, key: tuple[int, int, int]) -> None:
        super().__init__()
        self.profiler, self.key = profiler, key

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.profiler.observe(self.key, output)
        return output


class ChangeProfiler:
    """Records step-to-step changes of every component while enabled (a context manager)."""

    def __init__(self, transformer: torch.nn.Module, groups: tuple[BlockGroup, ...], num_steps: int) -> None:
        self.transformer, self.groups, self.num_steps = transformer, groups, num_steps
        self.modules = component_modules(transformer, groups)
        self._calls = dict.fromkeys(self.modules, 0)
        self._previous: dict[tuple[int, int, int], torch.Tensor] = {}
        self._sums = {
            name: np.zeros((num_steps - 1, group.num_blocks, len(group.components))) for name, group in self._named()
        }
        self._counts = {name: np.zeros_like(total) for name, total in self._sums.items()}
        self._created: list[torch.nn.Module] = []

    def _named(self) -> list[tuple[str, BlockGroup]]:
        return [(group.name, group) for group in self.groups]

    def observe(self, key: tuple[int, int, int], output: Any) -> None:
        tensor = (output[0] if isinstance(output, tuple) else output).detach().float()
        step = self._calls[key] % self.num_steps
        self._calls[key] += 1
        previous = self._previous.get(key) if step else None
        if previous is not None and previous.shape == tensor.shape:
            change = (tensor - previous).flatten(1).abs().sum(1) / previous.flatten(1).abs().sum(1).clamp_min(1e-12)
            g, b, c = key
            name = self.groups[g].name
            self._sums[name][step - 1, b, c] += float(change.sum())
            self._counts[name][step - 1, b, c] += change.numel()
        self._previous[key] = tensor

    def profile(self, images: int) -> ChangeProfile:
        """The mean changes so far, for `images` generated images (the caller knows how many it asked for)."""
        changes = {name: self._sums[name] / np.maximum(self._counts[name], 1) for name, _ in self._named()}
        return ChangeProfile(self.groups, self.num_steps, changes, images)

    def __enter__(self) -> ChangeProfiler:
        for key, module in self.modules.items():
            add_hook(module, _ChangeHook(self, key), PROFILE_HOOK, self._created)
        return self

    def __exit__(self, *exc_info: object) -> None:
        remove_hooks(self.modules.values(), PROFILE_HOOK, self._created)
        self._previous.clear()
