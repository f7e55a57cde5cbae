"""First-Block Cache (ParaAttention; diffusers' `FirstBlockCacheConfig`): block 0 always runs, and the rest of
the stack is skipped while block 0's residual stays close to its value at the last refresh.

Each step: `r = block0(h) − h`; `relL1(r, r_ref) < threshold` applies the cached residual of blocks 1.. to
block 0's output, else blocks 1.. run, their residual is kept and `r_ref = r`. No accumulation: the distance
is to the last refresh, not to the previous step. The default threshold is diffusers' 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .policy import Gate, PolicyConfig, PolicyError, relative_l1


@dataclass(frozen=True)
class FirstBlockCacheConfig(PolicyConfig):
    name = "first-block-cache"
    runs_first_block = True
    threshold: float = 0.05

    def gate(self) -> Gate:
        return FirstBlockGate(self.threshold)

    def feature(
        self, block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any], block_output: torch.Tensor | None
    ) -> torch.Tensor:
        if block_output is None:
            raise PolicyError("First-Block Cache compares block 0's residual, so block 0 must have run")
        return block_output - hidden


class FirstBlockGate(Gate):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.reference: torch.Tensor | None = None

    def decide(self, step: int, num_steps: int, feature: torch.Tensor) -> bool:
        if self.reference is not None and relative_l1(feature, self.reference) < self.threshold:
            return False
        self.reference = feature
        return True


CONFIG = FirstBlockCacheConfig
