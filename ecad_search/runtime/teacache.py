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
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.blocks import modulated_input
from .policy import Gate, PolicyConfig, relative_l1


@dataclass(frozen=True)
class TeaCacheConfig(PolicyConfig):
    name = "teacache"
    threshold: float = 0.25
    coefficients: tuple[float, ...] = ()

    def gate(self) -> Gate:
        return TeaCacheGate(self.threshold, self.coefficients)

    def feature(
        self, block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any], block_output: torch.Tensor | None
    ) -> torch.Tensor:
        return modulated_input(block, hidden, kwargs)


class TeaCacheGate(Gate):
    def __init__(self, threshold: float, coefficients: tuple[float, ...]) -> None:
        self.threshold = threshold
        self.rescale = np.poly1d(coefficients) if coefficients else None
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None

    def decide(self, step: int, num_steps: int, feature: torch.Tensor) -> bool:
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
