"""TeaCache (Liu et al., CVPR 2025): reuse the stack's residual while the accumulated, rescaled change of
block 0's timestep-modulated input stays under a threshold.

Each step: `d = poly(relL1(F_t, F_{t−1}))`, `acc += d`; `acc < threshold` reuses, else the stack computes
and `acc` returns to 0. The previous feature is updated every step, reused or not. The first and the last
step always compute. `coefficients` rescale the input change to the output change (highest power first); the
published ones are for other models (FLUX: 498.651651, −283.781631, 55.8554382, −3.82021401, 0.264230861),
so PixArt, digits and any other model are calibrated (`calibrate`, `ecad-search calibrate teacache`): a
4th-order fit of the stack output's relative change on the modulated input's, over consecutive steps of
uncached runs. Uncalibrated (`coefficients=()`) the gate thresholds the input change itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.blocks import modulated_input
from .base import Gate, KnobRange, Observation, PolicyConfig, relative_l1

if TYPE_CHECKING:
    import torch

POLYNOMIAL_DEGREE = 4


@dataclass(frozen=True)
class TeaCacheConfig(PolicyConfig):
    name = "teacache"
    threshold: float = 0.25
    coefficients: tuple[float, ...] = ()

    @property
    def needs_calibration(self) -> bool:
        return not self.coefficients

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


class _ChangeRecorder(Gate):
    """Computes every step and keeps the relative change of the modulated input and of the stack's output."""

    def __init__(self, pairs: list[tuple[float, float]]) -> None:
        self.pairs = pairs
        self.feature: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self.change = 0.0

    def decide(self, seen: Observation) -> bool:
        feature = modulated_input(seen.first_block, seen.stack_input, seen.block_kwargs)
        self.change = 0.0 if self.feature is None else relative_l1(feature, self.feature)
        self.feature = feature
        return True

    def observe(self, seen: Observation, output: torch.Tensor) -> None:
        if self.output is not None:
            self.pairs.append((self.change, relative_l1(output, self.output)))
        self.output = output


@dataclass(frozen=True)
class _Recording(TeaCacheConfig):
    pairs: list[tuple[float, float]] | None = None

    def gate(self) -> Gate:
        return _ChangeRecorder(self.pairs if self.pairs is not None else [])


def calibrate(pipe: Any, prompts: list[str], run: Callable[[list[str]], object], steps: int) -> dict[str, Any]:
    """The rescaling polynomial, fitted on (input change, output change) pairs of consecutive steps of one
    uncached run per prompt."""
    from .runtime import PolicyHandle

    pairs: list[tuple[float, float]] = []
    with PolicyHandle(pipe, _Recording(pairs=pairs)).enable():
        for prompt in prompts:
            run([prompt])
    inputs, outputs = np.array(pairs).T
    return {"coefficients": [float(c) for c in np.polyfit(inputs, outputs, POLYNOMIAL_DEGREE)]}


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"threshold": KnobRange(0.05, 2.0, log=True)}
CONFIG = TeaCacheConfig
