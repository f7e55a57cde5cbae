"""FORA (Selvaraju et al., 2024): every block's attention and feed-forward outputs (before the adaLN gate) are
computed on refresh steps and reused in between, scaled by the current step's gates.

A static schedule, so it runs on the component runtime of learned schedules rather than as a step-level gate:
the block around each component (gate, residual add) always runs with the current modulation. Refresh rule of
the reference code: `step % interval == 0`, and the last step (`refresh_last`; without it this is exactly
`heuristics.fora`). Default interval 3, the common choice of the FORA paper (DiT-XL/2); the reference quotes
2–6 as the usual range and gives no per-family preset. No arithmetic of its own: its overhead is 0 MACs.

Per-component policies share `ComponentPolicyConfig` and `ComponentPolicyHandle` from here: the handle builds
the policy's schedule for each run's step count when the pipeline sets its timesteps, and reports runs,
decisions and the realised mask like `PolicyHandle`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..models.blocks import discover_block_groups
from ..runtime.apply import ScheduleHandle, transformer_of
from ..runtime.forecast import Forecaster
from ..runtime.hooks import RunState
from ..schedule import BlockGroup, CacheSchedule
from .base import Gate, KnobRange, PolicyConfig, PolicyError
from .runtime import FinishedRun, policy_provenance, realised_mask


@dataclass(frozen=True)
class ComponentPolicyConfig(PolicyConfig):
    """A policy that is a static per-step schedule of every component, with an optional forecasting reuse
    rule: it decides nothing per step, so it has no gate."""

    @abstractmethod
    def computed_steps(self, num_steps: int) -> list[int]:
        """The steps on which every component computes."""

    def forecaster(self) -> Forecaster | None:
        """The reuse rule: None reuses each component's last output unchanged."""
        return None

    def gate(self) -> Gate:
        raise PolicyError(f"{self.name} is a per-component schedule, not a step gate: apply it with apply_policy")

    def apply(self, pipe: Any) -> ComponentPolicyHandle:
        return ComponentPolicyHandle(pipe, self).enable()

    def schedule(self, groups: tuple[BlockGroup, ...], num_steps: int) -> CacheSchedule:
        """This policy's mask for a run of `num_steps`: a computed step runs every component, the others none."""
        computed = np.zeros(num_steps, dtype=bool)
        computed[self.computed_steps(num_steps)] = True
        masks = {
            group.name: np.broadcast_to(computed[:, None, None], (num_steps, group.num_blocks, len(group.components)))
            for group in groups
        }
        return CacheSchedule(groups=groups, masks=masks, name=self.name, provenance=policy_provenance(self))


class ComponentPolicyHandle(ScheduleHandle):
    """An applied per-component policy: a schedule handle (own hook names, so it can sit on a transformer that
    already follows a schedule) whose schedule is rebuilt for each run's step count. `runs` holds every
    finished run (per step: computed or not, and the forecaster's MACs); `decisions` their decisions."""

    step_hook = "ecad_search_component_policy_step"
    component_hook = "ecad_search_component_policy"

    def __init__(self, pipe: Any, config: ComponentPolicyConfig) -> None:
        if getattr(pipe, "scheduler", None) is None:
            raise PolicyError("a policy needs the pipeline (its scheduler says where each run starts)")
        self.config = config
        self.groups = discover_block_groups(transformer_of(pipe))
        # The step count is known only once the pipeline sets its timesteps; until then a one-step placeholder.
        super().__init__(pipe, config.schedule(self.groups, 1), config.forecaster())
        self._runtime.on_finish = self._finish
        self.runs: list[FinishedRun] = []

    @property
    def decisions(self) -> list[list[bool]]:
        return [run.decisions for run in self.runs]

    def enable(self) -> ComponentPolicyHandle:
        super().enable()
        return self

    def __enter__(self) -> ComponentPolicyHandle:
        return self.enable()

    def realised_schedule(self, template: CacheSchedule, run: int = -1) -> CacheSchedule:
        """A finished run as a static schedule on the template's layout: the policy's own mask."""
        return realised_mask(template, self.groups, self.runs[run].decisions, self.config)

    def _start_run(self, model_calls: int) -> None:
        if model_calls != self.schedule.num_steps:
            self.swap(self.config.schedule(self.groups, model_calls))
        super()._start_run(model_calls)

    def _finish(self, state: RunState) -> None:
        masks = self._runtime.compute
        decisions = [all(bool(mask[step].all()) for mask in masks) for step in range(self.schedule.num_steps)]
        spent = state.forecast_macs + sum(kept.macs for kept in state.kept.values())
        overhead = spent if self._runtime.forecaster is not None else 0.0
        self.runs.append(FinishedRun(decisions, overhead))


@dataclass(frozen=True)
class ForaConfig(ComponentPolicyConfig):
    name = "fora"
    interval: int = 3
    refresh_last: bool = True
    limits: ClassVar[dict[str, tuple[float, float]]] = {"interval": (1, math.inf)}

    def computed_steps(self, num_steps: int) -> list[int]:
        return refresh_steps(num_steps, self.interval, self.refresh_last)


def refresh_steps(num_steps: int, interval: int, refresh_last: bool) -> list[int]:
    """FORA's refresh steps: every `interval`-th from step 0, and the last one when `refresh_last`."""
    return [s for s in range(num_steps) if s % interval == 0 or (refresh_last and s == num_steps - 1)]


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"interval": KnobRange(2, 10, integer=True)}
CONFIG = ForaConfig
