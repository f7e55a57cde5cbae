"""MagCache (Ma et al., NeurIPS 2025): skip steps while the error accumulated from a calibrated magnitude law
stays small; the decisions depend on the calibrated table and the knobs only, never on the run's data.

The law: the stack's residual `r_t = h_out − h_in` changes magnitude slowly and almost independently of the
prompt, so `γ_t = mean over tokens of ‖r_t‖₂ / ‖r_{t−1}‖₂` (norm over channels), measured once on uncached
runs, predicts how far a reused residual drifts. Gate, for steps `i ≥ round(retention·N)`:
`ratio *= γ_i; n += 1; err += |1 − ratio|`; reuse while `err ≤ threshold and n ≤ max_skips`, else compute and
reset `ratio = 1, n = 0, err = 0`. Earlier steps compute, and so does step 0 whatever the retention (there is
nothing to reuse yet). The last step is not forced, as in the reference (its 50-step FLUX simulation, and
diffusers' port, have no last-step rule); the official FLUX script's extra forced step 11 (28 steps only) is
left out. When the run's step count N differs from the table's length L, step `i` reads entry
`round(i·(L−1)/(N−1))` (nearest index). Rounding follows diffusers' port: half up for the retention, half to
even for the index. The gate reads one number per step: its arithmetic is not counted as overhead.

Defaults are the reference's for FLUX.1-dev at 28 steps (threshold 0.24, max_skips 5, retention 0.1, as in
diffusers' `MagCacheConfig`). Published for other families: Wan2.1 1.3B K=2 ("slow") or K=4 ("fast") with
δ ∈ {0.03, 0.06, 0.12} and retention 0.2; Wan2.1 14B / I2V K=6, δ=0.24, retention 0.2. FLUX's published
table is not in the reference, so every model's `ratios` come from `calibrate`; `ratios[0]` is 1 by
convention (step 0 has no previous residual).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Gate, KnobRange, Observation, PolicyConfig, PolicyError

if TYPE_CHECKING:
    import torch


def nearest_ratios(ratios: tuple[float, ...], num_steps: int) -> list[float]:
    """The table resampled to `num_steps` by nearest index (the ends map to the ends)."""
    if num_steps == len(ratios):
        return list(ratios)
    scale = (len(ratios) - 1) / max(num_steps - 1, 1)
    return [ratios[round(i * scale)] for i in range(num_steps)]


@dataclass(frozen=True)
class MagCacheConfig(PolicyConfig):
    name = "magcache"
    threshold: float = 0.24
    max_skips: int = 5
    retention: float = 0.1
    ratios: tuple[float, ...] = ()
    limits: ClassVar[dict[str, tuple[float, float]]] = {"retention": (0.0, 1.0)}

    @property
    def needs_calibration(self) -> bool:
        return not self.ratios

    def gate(self) -> Gate:
        return MagCacheGate(self)


class MagCacheGate(Gate):
    def __init__(self, config: MagCacheConfig) -> None:
        if config.needs_calibration:
            raise PolicyError(
                "magcache needs calibrated magnitude ratios: run `ecad-search calibrate magcache --model M`"
            )
        self.config = config
        self.table: list[float] = []
        self.ratio, self.skips, self.error = 1.0, 0, 0.0

    def decide(self, seen: Observation) -> bool:
        return self.rule(seen.step, seen.num_steps)

    def rule(self, step: int, num_steps: int) -> bool:
        """Accumulate the predicted drift of the cached residual; compute (and reset) past either limit."""
        if len(self.table) != num_steps:
            self.table = nearest_ratios(self.config.ratios, num_steps)
        if step == 0 or step < math.floor(self.config.retention * num_steps + 0.5):
            return True
        self.ratio *= self.table[step]
        self.skips += 1
        self.error += abs(1 - self.ratio)
        if self.error <= self.config.threshold and self.skips <= self.config.max_skips:
            return False
        self.ratio, self.skips, self.error = 1.0, 0, 0.0
        return True


@dataclass(frozen=True)
class _Recording(PolicyConfig):
    """Every step computes; each run's gate keeps the per-token norms of the stack's residual."""

    name = "magcache-calibration"
    gates: list[_RecordingGate] = field(default_factory=list)

    def gate(self) -> Gate:
        self.gates.append(_RecordingGate())
        return self.gates[-1]


class _RecordingGate(Gate):
    def __init__(self) -> None:
        self.norms: list[torch.Tensor] = []

    def decide(self, seen: Observation) -> bool:
        return True

    def observe(self, seen: Observation, output: torch.Tensor) -> None:
        self.norms.append((output.float() - seen.stack_input.float()).norm(dim=-1).cpu())

    def ratios(self) -> list[float]:
        steps = zip(self.norms[1:], self.norms[:-1], strict=True)
        return [1.0] + [float((now / before.clamp_min(1e-12)).mean()) for now, before in steps]


def calibrate(pipe: Any, prompts: list[str], run: Callable[[list[str]], object], steps: int) -> dict[str, Any]:
    """`{"ratios": [γ_0 = 1, γ_1, …, γ_{N−1}]}` from uncached runs, one per prompt: per step the mean over the
    batch's rows (PixArt's batched guidance pair included) and tokens of the residual norm's ratio to the
    previous step's, then the mean over prompts."""
    import torch

    from .runtime import apply_policy

    recording = _Recording()
    with apply_policy(pipe, recording):
        for prompt in prompts:
            run([prompt])
    tables = torch.tensor([gate.ratios() for gate in recording.gates], dtype=torch.float64)
    return {"ratios": tables.mean(dim=0).tolist()}


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"threshold": KnobRange(0.02, 1.0, log=True), "max_skips": KnobRange(1, 8, integer=True)}
CONFIG = MagCacheConfig
