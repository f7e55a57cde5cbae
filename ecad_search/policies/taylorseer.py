"""TaylorSeer (Liu et al., ICCV 2025): FORA's static interval schedule, but a skipped step forecasts each
component's output (every block's attention and feed-forward outputs, before the adaLN gate) with a Taylor
series whose derivatives are finite differences kept at the full steps.

Schedule (the reference code's counter): the first `warmup` steps are full, then every `interval`-th step
after the last warm-up step (steps `warmup − 1 + k·interval`); the last step is not forced. At a full step
`D⁰ = F`, `D^{i+1} = (D^i − D^i_prev)/Δk` up to `max_order` (Δk: steps since the previous full step), as far as
the previous full step kept `D^i`; differences are first taken at the last warm-up step, as in the reference,
so earlier warm-up steps keep `D⁰` only. A skipped step at distance k from the last full step returns
`Σ_i D^i·k^i/i!` (`runtime.forecast`, the fill a schedule can ask for too). These are backward differences, so
the forecast is exact for outputs linear in the step index; a quadratic is off by terms of order Δk (see the
tests). Memory: `max_order + 1` outputs per component.

Defaults are the reference's FLUX preset (`fresh_threshold` 6, `first_enhance` 3, `max_order` 1); the
reference gives no other family's preset (diffusers' TaylorSeerCache defaults to interval 5, 3 warm-up steps,
order 1). `max_order = 0` is FORA-style plain reuse on this schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .base import ComponentPolicyConfig, KnobRange

if TYPE_CHECKING:
    from ..runtime.forecast import Forecaster


def full_steps(num_steps: int, interval: int, warmup: int) -> list[int]:
    """The steps TaylorSeer computes in full."""
    return [s for s in range(num_steps) if s < warmup or (s - (warmup - 1)) % interval == 0]


@dataclass(frozen=True)
class TaylorSeerConfig(ComponentPolicyConfig):
    name = "taylorseer"
    skipped = "forecast"
    interval: int = 6
    max_order: int = 1
    warmup: int = 3

    # Step 0 computes: at least one warm-up step.
    limits: ClassVar[dict[str, tuple[float, float]]] = {"interval": (1, math.inf), "warmup": (1, math.inf)}

    def computed_steps(self, num_steps: int) -> list[int]:
        return full_steps(num_steps, self.interval, self.warmup)

    def forecaster(self) -> Forecaster:
        from ..runtime.forecast import TaylorForecaster

        return TaylorForecaster(self.max_order, self.warmup)


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"interval": KnobRange(2, 8, integer=True), "max_order": KnobRange(0, 2, integer=True)}
CONFIG = TaylorSeerConfig
