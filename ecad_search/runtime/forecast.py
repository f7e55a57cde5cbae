"""Forecast fill: a skipped component's output predicted by a Taylor series from the steps it computed.

At a computing step the component's terms are `D⁰ = F` and `D^{i+1} = (D^i − D^i_prev)/Δk` up to the order, as
far as the previous computing step kept `D^i` (Δk: steps between the two). At a skipped step k steps after the
last compute the fill is `Σ_i D^i·k^i/i!`. The differences are backward, so order 1 is exact for outputs
linear in the step and order 0 is plain reuse, bit for bit. TaylorSeer (Liu et al., ICCV 2025) fills FORA's
skipped steps this way; a schedule with `fill="taylor1"` or `"taylor2"` fills its own zeros this way.

The arithmetic is counted as MACs: one multiply-add per element for each difference taken at a compute and
each term added at a forecast (`schedule.forecast_macs` counts the same from the mask alone).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..schedule import CacheSchedule


@dataclass
class Forecast:
    """What a forecasting fill keeps of one component between its computes: the step it last computed, its
    terms (the output and its finite differences, each shaped like the output) and the MACs spent on the
    component so far in the run."""

    step: int
    terms: tuple[Any, ...]
    macs: float = 0.0


class Forecaster(ABC):
    """A fill rule that forecasts a component's output at a skipped step from what it kept at the computing
    steps, instead of returning the last output unchanged."""

    @abstractmethod
    def update(self, kept: Forecast | None, output: Any, step: int) -> Forecast:
        """What to keep once the component computed `output` at `step` (`kept`: what was kept before, if any)."""

    @abstractmethod
    def forecast(self, kept: Forecast, step: int) -> Any:
        """The component's output at the skipped `step`."""


def finite_differences(output: Any, previous: tuple[Any, ...], distance: int, max_order: int) -> tuple[Any, ...]:
    """`(D⁰, …)` at this computing step from the previous computing step's terms, `distance` steps back."""
    terms = [output]
    for lower in previous[:max_order]:
        terms.append(_elementwise(lambda new, old: (new - old) / distance, terms[-1], lower))
    return tuple(terms)


def taylor_forecast(terms: tuple[Any, ...], distance: int) -> Any:
    """`Σ_i D^i·k^i/i!` at `distance` k from the computing step; with one term, that term itself (bit for bit)."""
    output = terms[0]
    for order, term in enumerate(terms[1:], start=1):
        scale = distance**order / math.factorial(order)
        output = _elementwise(lambda total, d, s=scale: total + d * s, output, term)
    return output


class TaylorForecaster(Forecaster):
    """Keeps each component's Taylor terms at its computing steps and forecasts from them in between.

    `warmup`: differences are first taken at step `warmup − 1` (TaylorSeer's warm-up; 1 for schedules, which
    take them from the second compute on)."""

    def __init__(self, max_order: int, warmup: int = 1) -> None:
        self.max_order, self.warmup = max_order, warmup

    def update(self, kept: Forecast | None, output: Any, step: int) -> Forecast:
        if kept is None or step < self.warmup - 1:
            return Forecast(step, (output,), kept.macs if kept is not None else 0.0)
        terms = finite_differences(output, kept.terms, step - kept.step, self.max_order)
        return Forecast(step, terms, kept.macs + (len(terms) - 1) * _numel(output))

    def forecast(self, kept: Forecast, step: int) -> Any:
        kept.macs += (len(kept.terms) - 1) * _numel(kept.terms[0])
        return taylor_forecast(kept.terms, step - kept.step)


def schedule_forecaster(schedule: CacheSchedule) -> Forecaster | None:
    """The fill a schedule asks for: None for plain reuse, else a Taylor forecast of its order."""
    order = schedule.forecast_order
    return TaylorForecaster(order) if order else None


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
