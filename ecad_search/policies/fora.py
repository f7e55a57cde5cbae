"""FORA (Selvaraju et al., 2024): every block's attention and feed-forward outputs (before the adaLN gate) are
computed on refresh steps and reused in between, scaled by the current step's gates.

A static schedule, so it runs on the component runtime of learned schedules rather than as a step-level gate:
the block around each component (gate, residual add) always runs with the current modulation. Refresh rule of
the reference code: `step % interval == 0`, and the last step (`refresh_last`; without it this is exactly
`heuristics.fora`). Default interval 3, the common choice of the FORA paper (DiT-XL/2); the reference quotes
2–6 as the usual range and gives no per-family preset. No arithmetic of its own: its overhead is 0 MACs.

Per-component policies are `ComponentPolicyConfig`s (`base.py`), applied by `ComponentPolicyHandle`
(`runtime.py`): the handle builds the policy's schedule for each run's step count when the pipeline sets its
timesteps, and reports runs, decisions and the realised mask like `PolicyHandle`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .base import ComponentPolicyConfig, KnobRange


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
