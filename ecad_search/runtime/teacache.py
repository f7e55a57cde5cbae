"""TeaCache (Liu et al., CVPR 2025): reuse the stack's residual while the accumulated, rescaled change of
block 0's timestep-modulated input stays under a threshold.

Each step: `d = poly(relL1(F_t, F_{t−1}))`, `acc += d`; `acc < threshold` reuses, else the stack computes
and `acc` returns to 0. The previous feature is updated every step, reused or not. The first and the last
step always compute. `coefficients` rescale the input change to the output change (highest power first); the
published ones are for other models (FLUX: 498.651651, −283.781631, 55.8554382, −3.82021401, 0.264230861),
so for PixArt and digits the default is none (`d` is the input change itself) until they are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.blocks import modulated_input
from .policy import Gate, Observation, PolicyConfig, relative_l1


@dataclass(frozen=True)
class TeaCacheConfig(PolicyConfig):
    name = "teacache"
    threshold: float = 0.25
    coefficients: tuple[float, ...] = ()

    def gate(self) -> Gate:
        return TeaCacheGate(self.threshold, self.coefficients)


class TeaCacheGate(Gate):
    def __init__(self, threshold: float, coefficients: tuple[float, ...]) -> None:
        self.threshold = threshold
        self.rescale = np.poly1d(coefficients) if coefficients else None
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None

    def decide(self, seen: Observation) -> bool:
        feature = modulated_input(seen.first_block, seen.stack_input, seen.block_kwargs)
        # The modulation (a norm, a scale and a shift) and the distance: a few MACs per element.
        self.overhead_macs += 4 * feature.numel()
        return self.rule(seen.step, seen.num_steps, feature)

    def rule(self, step: int, num_steps: int, feature: torch.Tensor) -> bool:
        """The decision on this step's feature: accumulate its rescaled change, compute at the threshold."""
        previous, self.previous = self.previous, feature
        if previous is None or step in (0, num_steps - 1):
            self.accumulated = 0.0
            return True
        change = relative_l1(feature, previous)
        self.accumulated += float(self.rescale(change)) if self.rescale is not None else change
        if self.accumulated < self.threshold:
            return False
        self.accumulated = 0.0
        return True


CONFIG = TeaCacheConfig
