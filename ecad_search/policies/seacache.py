"""SeaCache (Chung et al., CVPR 2026): TeaCache's accumulate-and-threshold gate, measured on the first block's
timestep-modulated input after a spectral filter that follows the denoising state (the SEA filter).

Why a filter: early in sampling the modulated input is mostly noise, whose high frequencies change a lot from
step to step without changing what the stack will output; a Wiener-type gain `G(f) = a·S(f)/(a²·S(f) + b²)`
with a power-law signal spectrum `S(f) = 1/|f|^p` keeps the content-carrying low frequencies while `b` (noise)
dominates `a` (signal), and opens up to all-pass as `b → 0`. The gain is built per token-grid axis from
`|fftfreq(N)|`, the 2-D filter is their outer product, divided by its mean over all bins so every step's
filter has unit average gain and the distances of different steps add up on one scale. The filter is applied
per channel as `Re iFFT2(G ⊙ FFT2(I))` over the (rows, cols) token grid, in float32, and cast back.

Each step: `F_t = filter(modulated input, a_t, b_t)`, `acc += relL1(F_t, F_{t−1})`; `acc < threshold` reuses,
else the stack computes and `acc` returns to 0 (TeaCache's rule, no polynomial rescaling). The first and the
last step always compute. Every step's feature is filtered, forced steps included (the paper's semantics; the
official Wan/FLUX scripts skip the filter on forced steps, so their first comparison after one is filtered
against unfiltered). `a, b` are the runtime's signal and noise at the step (flow matching: `a = 1 − σ, b = σ`),
kept above 1e-6 as the reference clamps σ to [1e-6, 1 − 1e-6] (at σ = 1 the gain would be 0/0).

Defaults are the reference's for FLUX.1-dev (50 steps): threshold 0.3 (≈50 % of steps computed; 0.6 gives
≈30 %) and p = 2 (images). Published for other families: Wan2.1 1.3B 0.20 / 0.35, Wan2.1 14B 0.2 / 0.4,
HunyuanVideo 0.20 / 0.4, with p = 3 for video (a 3-D grid, which this image-only runtime does not have).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..models.blocks import modulated_input
from .base import Gate, KnobRange, Observation, PolicyConfig
from .teacache import TeaCacheGate

if TYPE_CHECKING:
    import torch

FLOOR = 1e-6


def axis_gain(size: int, signal: float, noise: float, power: float) -> torch.Tensor:
    """The SEA gain along one token-grid axis, in float64 (the DC bin's spectrum is 1e16)."""
    import torch

    frequency = torch.fft.fftfreq(size, dtype=torch.float64).abs()
    spectrum = 1 / (frequency**power + 1e-16)
    return signal * spectrum / (signal**2 * spectrum + noise**2 + 1e-16)


def sea_filter(grid: tuple[int, int], signal: float, noise: float, power: float) -> torch.Tensor:
    """The mean-normalised 2-D SEA filter on a (rows, cols) grid of FFT bins."""
    import torch

    a, b = max(signal, FLOOR), max(noise, FLOOR)
    gain = torch.outer(axis_gain(grid[0], a, b, power), axis_gain(grid[1], a, b, power))
    return gain / gain.mean()


def filtered(feature: torch.Tensor, grid: tuple[int, int], gain: torch.Tensor) -> torch.Tensor:
    """`Re iFFT2(G ⊙ FFT2(I))` of a (batch, rows·cols, channels) feature over its row-major token grid."""
    import torch

    batch, tokens, channels = feature.shape
    image = feature.float().reshape(batch, grid[0], grid[1], channels)
    spectrum = torch.fft.fft2(image, dim=(1, 2)) * gain.to(torch.float32)[None, :, :, None]
    return torch.fft.ifft2(spectrum, dim=(1, 2)).real.reshape(batch, tokens, channels).to(feature.dtype)


@dataclass(frozen=True)
class SeaCacheConfig(PolicyConfig):
    name = "seacache"
    threshold: float = 0.3
    power: float = 2.0

    def gate(self) -> Gate:
        return SeaCacheGate(self.threshold, self.power)


class SeaCacheGate(TeaCacheGate):
    """TeaCache's state and `rule` (accumulated distance, reset on refresh, first and last step forced) on the
    SEA-filtered feature."""

    def __init__(self, threshold: float, power: float) -> None:
        super().__init__(threshold, ())
        self.power = power

    def decide(self, seen: Observation) -> bool:
        feature = modulated_input(seen.first_block, seen.stack_input, seen.block_kwargs)
        rows, cols = seen.grid
        points, transforms = rows * cols, feature.numel() // (rows * cols)
        # The modulation and the distance (a few MACs per element, as TeaCache), an FFT and an inverse FFT of
        # rows·cols points per (batch, channel), and the real filter times the complex spectrum.
        self.overhead_macs += 4 * feature.numel() + 2 * 2.5 * points * math.log2(max(points, 2)) * transforms
        self.overhead_macs += 2 * feature.numel()
        gain = sea_filter(seen.grid, seen.signal, seen.noise, self.power)
        return self.rule(seen.step, seen.num_steps, filtered(feature, seen.grid, gain))


# What `ecad-search compare` sweeps, from computing (nearly) every step to caching much.
SWEEP = {"threshold": KnobRange(0.05, 1.5, log=True)}
CONFIG = SeaCacheConfig
