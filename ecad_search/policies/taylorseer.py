"""TaylorSeer (Liu et al., ICCV 2025): FORA's static interval schedule, but a skipped step forecasts each
component's output (every block's attention and feed-forward outputs, before the adaLN gate) with a Taylor
series whose derivatives are finite differences kept at the full steps.

Schedule (the reference code's counter): the first `warmup` steps are full, then every `interval`-th step
after the last warm-up step (steps `warmup − 1 + k·interval`); the last step is not forced. At a full step
`D⁰ = F`, `D^{i+1} = (D^i − D^i_prev)/Δk` up to `max_order` (Δk: steps since the previous full step), as far as
the previous full step kept `D^i`; differences are first taken at the last warm-up step, as in the reference,
so earlier warm-up steps keep `D⁰` only. A skipped step at distance k from the last full step returns
`Σ_i D^i·k^i/i!`. These are backward differences, so the forecast is exact for outputs linear in the step
index; a quadratic is off by terms of order Δk (see the tests). Memory: `max_order + 1` outputs per component.

Defaults are the reference's FLUX preset (`fresh_threshold` 6, `first_enhance` 3, `max_order` 1); the
reference gives no other family's preset (diffusers' TaylorSeerCache defaults to interval 5, 3 warm-up steps,
order 1). `max_order = 0` is FORA-style plain reuse on this schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..runtime.hooks import Forecast, Forecaster
from .base import KnobRange, PolicyError
from .fora import ComponentPolicyConfig


def full_steps(num_steps: int, interval: int, warmup: int) -> list[int]:
    """The steps TaylorSeer computes in full."""
    return [s for s in range(num_steps) if s < warmup or (s - (warmup - 1)) % interval == 0]


def finite_differences(output: Any, previous: tuple[Any, ...], distance: int, max_order: int) -> tuple[Any, ...]:
    """`(D⁰, …)` at this full step from the previous full step's terms `previous`, `distance` steps back."""
    terms = [output]
    for lower in previous[:max_order]:
        terms.append(_elementwise(lambda new, old: (new - old) / distance, terms[-1], lower))
    return tuple(terms)


def taylor_forecast(terms: tuple[Any, ...], distance: int) -> Any:
    """`Σ_i D^i·k^i/i!` at `distance` k from the full step; with one term, that term itself (bit for bit)."""
    output = terms[0]
    for order, term in enumerate(terms[1:], start=1):
        scale = distance**order / math.factorial(order)
        output = _elementwise(lambda total, d, s=scale: total + d * s, output, term)
    return output


class TaylorForecaster(Forecaster):
    """Keeps each component's Taylor terms at its full steps and forecasts from them in between; counts its
    arithmetic on the kept terms: one multiply-add per element for each difference and each Taylor term."""

    def __init__(self, max_order: int, warmup: int) -> None:
        self.max_order, self.warmup = max_order, warmup

    def update(self, kept: Forecast | None, output: Any, step: int) -> Forecast:
        if kept is None or step < self.warmup - 1:
            return Forecast(step, (output,), kept.macs if kept is not None else 0.0)
        terms = finite_differences(output, kept.terms, step - kept.step, self.max_order)
        return Forecast(step, terms, kept.macs + (len(terms) - 1) * _numel(output))

    def forecast(self, kept: Forecast, step: int) -> Any:
        kept.macs += (len(kept.terms) - 1) * _numel(kept.terms[0])
        return taylor_forecast(kept.terms, step - kept.step)


@dataclass(frozen=True)
class TaylorSeerConfig(ComponentPolicyConfig):
    name = "taylorseer"
    skipped = "forecast"
    interval: int = 6
    max_order: int = 1
    warmup: int = 3

    def __post_init__(self) -> None:
        if self.interval < 1 or self.warmup < 1 or self.max_order < 0:
            raise PolicyError(
                f"taylorseer needs interval ≥ 1, warmup ≥ 1 (step 0 computes) and max_order ≥ 0, got "
                f"interval={self.interval}, warmup={self.warmup}, max_order={self.max_order}"
            )

    def computed_steps(self, num_steps: int) -> list[int]:
        return full_steps(num_steps, self.interval, self.warmup)

    def forecaster(self) -> Forecaster:
        return TaylorForecaster(self.max_order, self.warmup)


def _elementwise(combine: Callable[..., torch.Tensor], *outputs: Any) -> Any:
    """`combine` applied to matching tensors of component outputs (a tensor, or a tuple of them: FLUX's
    double-stream attention returns the image and the text stream)."""
    if isinstance(outputs[0], tuple):
        return tuple(_elementwise(combine, *parts) for parts in zip(*outputs, strict=True))
    return combine(*outputs)


def _numel(output: Any) -> int:
    if isinstance(output, tuple):
        return sum(_numel(part) for part in output)
    return output.numel()


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"interval": KnobRange(2, 8, integer=True), "max_order": KnobRange(0, 2, integer=True)}
CONFIG = TaylorSeerConfig
