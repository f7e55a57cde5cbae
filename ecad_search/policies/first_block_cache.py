"""First-Block Cache (ParaAttention; diffusers' `FirstBlockCacheConfig`): block 0 always runs, and the rest of
the stack is skipped while block 0's residual stays close to its value at the last refresh.

Each step: `r = block0(h) − h`; `relL1(r, r_ref) < threshold` applies the cached residual of blocks 1.. to
block 0's output, else blocks 1.. run, their residual is kept and `r_ref = r`. No accumulation: the distance
is to the last refresh, not to the previous step. The default threshold is diffusers' 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Gate, KnobRange, Observation, PolicyConfig, relative_l1

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FirstBlockCacheConfig(PolicyConfig):
    name = "first-block-cache"
    residual_from_input = False
    threshold: float = 0.05

    @property
    def leading_blocks(self) -> int:
        return 1

    def gate(self) -> Gate:
        return FirstBlockGate(self.threshold)


class FirstBlockGate(Gate):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.reference: torch.Tensor | None = None

    def decide(self, seen: Observation) -> bool:
        assert seen.probe is not None, "block 0 runs before the decision"
        feature = seen.probe - seen.stack_input
        self.overhead_macs += 3 * feature.numel()
        return self.rule(feature)

    def rule(self, feature: torch.Tensor) -> bool:
        """Block 0's residual against the one at the last refresh."""
        if self.reference is not None and relative_l1(feature, self.reference) < self.threshold:
            return False
        self.reference = feature
        return True


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"threshold": KnobRange(0.01, 0.5, log=True)}
CONFIG = FirstBlockCacheConfig
