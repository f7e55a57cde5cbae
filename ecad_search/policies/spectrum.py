"""Spectrum (Han et al., CVPR 2026): real forwards on a fixed schedule that thins out as the run goes, and in
between a forecast of the stack's output from a Chebyshev ridge fit over every real output so far.

Schedule: the first `warmup` steps compute; then a window `win` (starting at `window`) and a count `c` of
forecast steps since the last real one: a step computes when `(c + 1) mod floor(win) == 0`, after which `win`
grows by `growth` (kept to 3 decimals) and `c` returns to 0. For 50 steps, W=5, N=2, α=0.75 that is
0–4, 6, 8, 11, 15, 20, 25, 31, 38, 46. The step index maps to `τ = 2k/steps − 1` (the reference code assumes
50 steps). Forecast: `C = (ΦᵀΦ + λI)⁻¹ΦᵀH` over the real outputs H with Chebyshev features Φ up to `degree`,
`ĥ(τ) = φ(τ)·C`, optionally blended with the linear extrapolation of the last two real outputs
(`h = w·ĥ + (1 − w)·h_lin`). The fit is tiny (P×P, P = degree + 1) and done in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .base import Gate, KnobRange, Observation, PolicyConfig

if TYPE_CHECKING:
    import torch


def forward_steps(num_steps: int, warmup: int, window: float, growth: float) -> list[int]:
    """The steps Spectrum runs the stack on."""
    steps, win, since = [], float(window), 0
    for step in range(num_steps):
        if step < warmup or (since + 1) % max(1, math.floor(win)) == 0:
            steps.append(step)
            if step >= warmup:
                win = round(win + growth, 3)
            since = 0
        else:
            since += 1
    return steps


def chebyshev(tau: torch.Tensor, degree: int) -> torch.Tensor:
    """Rows [T_0(τ), …, T_degree(τ)] for each τ."""
    import torch

    columns = [torch.ones_like(tau), tau]
    while len(columns) <= degree:
        columns.append(2 * tau * columns[-1] - columns[-2])
    return torch.stack(columns[: degree + 1], dim=-1)


def time_of(step: int, num_steps: int) -> float:
    return 2 * step / num_steps - 1


@dataclass(frozen=True)
class SpectrumConfig(PolicyConfig):
    name = "spectrum"
    skipped = "forecast"
    warmup: int = 5
    window: float = 2.0
    growth: float = 0.75
    degree: int = 4
    ridge: float = 0.1
    blend: float = 1.0
    # Step 0 computes: at least one warm-up step; the blend is a share.
    limits: ClassVar[dict[str, tuple[float, float]]] = {"warmup": (1, math.inf), "blend": (0.0, 1.0)}

    def gate(self) -> Gate:
        return SpectrumGate(self)


class SpectrumGate(Gate):
    def __init__(self, config: SpectrumConfig) -> None:
        self.config = config
        self.plan: set[int] | None = None
        self.times: list[float] = []
        self.outputs: list[torch.Tensor] = []

    def decide(self, seen: Observation) -> bool:
        if self.plan is None:
            c = self.config
            self.plan = set(forward_steps(seen.num_steps, c.warmup, c.window, c.growth))
        return seen.step in self.plan

    def observe(self, seen: Observation, output: torch.Tensor) -> None:
        self.times.append(time_of(seen.step, seen.num_steps))
        self.outputs.append(output)

    def reused_output(self, seen: Observation, reference: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # The fit: ΦᵀH over every real output so far, the P×P solve, and the forecast φ(τ)·C.
        basis, features = self.config.degree + 1, self.outputs[-1].numel()
        self.overhead_macs += basis * len(self.outputs) * features + basis**3 + basis * features
        return forecast(self.times, self.outputs, time_of(seen.step, seen.num_steps), self.config)


def forecast(times: list[float], outputs: list[torch.Tensor], tau: float, config: SpectrumConfig) -> torch.Tensor:
    """The ridge-fitted Chebyshev forecast at `tau`, blended with the linear extrapolation of the last two."""
    import torch

    last = outputs[-1]
    history = torch.stack([o.reshape(-1) for o in outputs]).double()
    basis = chebyshev(torch.tensor(times, dtype=torch.float64), config.degree)
    gram = basis.T @ basis + config.ridge * torch.eye(basis.shape[1], dtype=torch.float64)
    if config.ridge > 0:
        coefficients = torch.linalg.solve(gram, basis.T @ history)
    else:
        coefficients = torch.linalg.lstsq(basis, history).solution
    fitted = chebyshev(torch.tensor([tau], dtype=torch.float64), config.degree) @ coefficients
    if config.blend < 1 and len(outputs) > 1:
        slope = (history[-1] - history[-2]) / (times[-1] - times[-2])
        linear = history[-1] + slope * (tau - times[-1])
        fitted = config.blend * fitted + (1 - config.blend) * linear
    return fitted.reshape(last.shape).to(last.dtype)


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"growth": KnobRange(0.0, 3.0), "warmup": KnobRange(2, 6, integer=True)}
CONFIG = SpectrumConfig
