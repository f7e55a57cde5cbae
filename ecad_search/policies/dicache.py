"""DiCache (Bu et al., ICLR 2026): the model's own first blocks say when to refresh, and a reused step follows
the line through the last two cached residuals instead of repeating the last one.

Probe: the first `probe_blocks` (m) blocks run on every step; their output's relative L1 change between
consecutive steps is accumulated, `acc < threshold` reuses and anything else refreshes (the remaining blocks
run from the probe output, so the probe is not wasted) and returns `acc` to 0. The previous probe is updated
every step, reused or not. Forced refreshes: every step `i ≤ int(ret_ratio·N)` and the last step, which is
the reference's FLUX convention (its Wan and HunyuanVideo scripts force `i < int(ret_ratio·N)` and not the
last step: `force_last=False` gets that last half of it).

Trajectory alignment on a reused step: with the last two full residuals `R[-2], R[-1]` (`R = h_out − x`, x the
stack's input) and probe residuals `P[-2], P[-1]` (`P = probe − x`) of the computed steps, the current probe
residual's distance from `P[-2]` relative to the step `P[-1] − P[-2]` places this step on that line:
`γ = clip(mean|(p − x) − P[-2]| / mean|P[-1] − P[-2]|, 1, γ_max)` and the output is
`x + R[-2] + γ·(R[-1] − R[-2])`. The clip at 1 means it only ever extrapolates past the newest cache; with a
single cached residual the output is the plain `x + R[-1]`, and `gamma_max=1` makes every reuse that.

Defaults are the reference's FLUX.1-dev ones (δ 0.4 with the probe distance, m 1, ret_ratio 0.2, γ ≤ 1.5);
published elsewhere: HunyuanVideo δ 0.1, γ ≤ 1.5; Wan2.1 δ 0.2 in the paper (0.08 in the code's argument
default), γ ≤ 2.0; ret_ratio 0.2 and m 1 everywhere. None were published for PixArt or digits.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .base import Gate, KnobRange, Observation, PolicyConfig, relative_l1

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DiCacheConfig(PolicyConfig):
    name = "dicache"
    skipped = "extrapolated"
    threshold: float = 0.4
    probe_blocks: int = 1
    ret_ratio: float = 0.2
    gamma_max: float = 1.5
    force_last: bool = True
    # At least one probe block; γ of at least 1 (it only extrapolates).
    limits: ClassVar[dict[str, tuple[float, float]]] = {
        "probe_blocks": (1, math.inf),
        "ret_ratio": (0.0, 1.0),
        "gamma_max": (1.0, math.inf),
    }

    @property
    def leading_blocks(self) -> int:
        return self.probe_blocks

    def gate(self) -> Gate:
        return DiCacheGate(self)


def alignment_gamma(probe_residual: torch.Tensor, older: torch.Tensor, newer: torch.Tensor, gamma_max: float) -> float:
    """Where this step's probe residual lies on the line from the older to the newer cached one, in units of
    their distance, clipped to [1, gamma_max]."""
    travelled = (probe_residual - older).abs().float().mean()
    span = (newer - older).abs().float().mean().clamp_min(1e-12)
    return min(max(float(travelled / span), 1.0), gamma_max)


def aligned_output(x: torch.Tensor, older: torch.Tensor, newer: torch.Tensor, gamma: float) -> torch.Tensor:
    """The stack's output extrapolated along the two cached full residuals: `x + R[-2] + γ·(R[-1] − R[-2])`."""
    return x + older + gamma * (newer - older)


class DiCacheGate(Gate):
    def __init__(self, config: DiCacheConfig) -> None:
        self.config = config
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None
        # The two most recent computed steps' full residuals and probe residuals, oldest first.
        self.residuals: deque[torch.Tensor] = deque(maxlen=2)
        self.probe_residuals: deque[torch.Tensor] = deque(maxlen=2)

    def decide(self, seen: Observation) -> bool:
        assert seen.probe is not None, "the probe blocks run before the decision"
        # The probe distance: a difference, two absolute values and two sums per element.
        self.overhead_macs += 3 * seen.probe.numel()
        return self.rule(seen.step, seen.num_steps, seen.probe)

    def rule(self, step: int, num_steps: int, probe: torch.Tensor) -> bool:
        """The decision on this step's probe output: accumulate its change, refresh at the threshold."""
        previous, self.previous = self.previous, probe
        forced = step <= int(self.config.ret_ratio * num_steps) or (self.config.force_last and step == num_steps - 1)
        if previous is None or forced:
            self.accumulated = 0.0
            return True
        self.accumulated += relative_l1(probe, previous)
        if self.accumulated < self.config.threshold:
            return False
        self.accumulated = 0.0
        return True

    def observe(self, seen: Observation, output: torch.Tensor) -> None:
        assert seen.probe is not None, "the probe blocks ran on this step"
        self.residuals.append(output - seen.stack_input)
        self.probe_residuals.append(seen.probe - seen.stack_input)
        self.overhead_macs += 2 * output.numel()

    def reused_output(self, seen: Observation, reference: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if len(self.residuals) < 2:
            return reference + residual
        assert seen.probe is not None, "the probe blocks ran on this step"
        x = seen.stack_input
        gamma = alignment_gamma(seen.probe - x, *self.probe_residuals, self.config.gamma_max)
        # γ: the probe residual and two differences, absolute values and sums (7 per element); the
        # extrapolation: a difference, a scale and two additions (4 per element).
        self.overhead_macs += 11 * x.numel()
        return aligned_output(x, *self.residuals, gamma)


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"threshold": KnobRange(0.05, 1.0, log=True)}
CONFIG = DiCacheConfig
