"""SeaCache: the SEA filter against the reference's numbers and on hand-made grids, the gate on hand-made
features (accumulation, reset on refresh, the filter deciding what counts as change), and end to end on tiny
PixArt-α, tiny FLUX and digits."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ecad_search.evaluation import EvaluationSettings, run_template
from ecad_search.models import get_model
from ecad_search.policies import Observation, apply_policy, policy_config
from ecad_search.policies.seacache import SeaCacheGate, filtered, sea_filter

STEPS = 8


def gain(frequency: float, sigma: float, power: float = 2.0) -> float:
    """One axis's SEA gain written out for a flow-matching σ (a = 1 − σ, b = σ)."""
    a, b = 1 - sigma, sigma
    spectrum = 1 / (abs(frequency) ** power + 1e-16)
    return a * spectrum / (a * a * spectrum + b * b + 1e-16)


def test_the_filter_is_a_strong_low_pass_early_and_all_pass_late_with_mean_gain_one() -> None:
    # The reference's check (N=64, p=2, 2-D, mean-normalised), quoted to 2-3 significant figures: the
    # tolerances are half a unit of the last quoted digit.
    early = sea_filter((64, 64), 0.05, 0.95, 2.0)
    assert abs(early[0, 0] - 42) < 0.5 and abs(early[0, 1] - 38.6) < 0.05 and abs(early[32, 32] - 0.005) < 5e-4
    middle = sea_filter((64, 64), 0.5, 0.5, 2.0)
    assert abs(middle[0, 0] - 1.16) < 5e-3 and abs(middle[32, 32] - 0.74) < 5e-3
    # "≈1 everywhere": the spread at σ = 0.05 is about (b/a)²·f² per axis, under 2e-3 at Nyquist.
    late = sea_filter((64, 64), 0.95, 0.05, 2.0)
    assert (late - 1).abs().max() < 2e-3
    for g in (early, middle, late):
        assert abs(float(g.mean()) - 1) < 1e-12
    # σ = 1 (a = 0) would be 0/0: a and b are floored at 1e-6 as the reference clamps σ.
    pure_noise = sea_filter((8, 8), 0.0, 1.0, 2.0)
    assert torch.isfinite(pure_noise).all() and pure_noise[0, 0] > 63 and abs(float(pure_noise.mean()) - 1) < 1e-9


def test_the_filter_scales_each_grid_frequency_of_a_row_major_feature_by_its_gain() -> None:
    # A 4 x 8 grid: channel 0 is a cosine along the columns (bin (0, 1)), channel 1 one along the rows (bin
    # (1, 0)), channel 2 constant (DC). Each comes back scaled by its bin's gain; a wrong token order or a
    # swapped axis would mix frequencies or scale by another gain.
    rows, cols, sigma = 4, 8, 0.6
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    channels = [torch.cos(2 * math.pi * c / cols), torch.cos(2 * math.pi * r / rows), torch.ones(rows, cols)]
    feature = torch.stack(channels, dim=-1).reshape(1, rows * cols, 3).double()
    row_mean = np.mean([gain(f, sigma) for f in np.fft.fftfreq(rows)])
    col_mean = np.mean([gain(f, sigma) for f in np.fft.fftfreq(cols)])
    expected = [
        gain(0, sigma) * gain(1 / cols, sigma) / (row_mean * col_mean),
        gain(1 / rows, sigma) * gain(0, sigma) / (row_mean * col_mean),
        gain(0, sigma) ** 2 / (row_mean * col_mean),
    ]
    out = filtered(feature, (rows, cols), sea_filter((rows, cols), 1 - sigma, sigma, 2.0))
    assert out.dtype == feature.dtype
    for k in range(3):
        assert torch.allclose(out[..., k], expected[k] * feature[..., k], rtol=1e-5, atol=1e-6)
    assert expected[0] > expected[1], "the finer column frequency keeps more than the coarser row one"


def test_seacache_accumulates_relative_change_and_resets_on_refresh() -> None:
    # The rule on (already filtered) constant features changing by 10 % a step: 0.1, 0.2 reuse, 0.3 computes
    # and resets, ...; the first and last steps are forced.
    gate = SeaCacheGate(0.25, 2.0)
    features = [torch.full((1, 4, 1), 1.1**k) for k in range(7)]
    assert [gate.rule(k, 7, f) for k, f in enumerate(features)] == [True, False, False, True, False, False, True]
    zero = SeaCacheGate(0.0, 2.0)
    assert all(zero.rule(k, 7, f) for k, f in enumerate(features)), "a threshold of 0 computes every step"


class Identity(nn.Module):
    """A block whose modulated input is its input (a plain `norm1`), so the gate sees the hand-made feature."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.Identity()


def observe(step: int, steps: int, feature: torch.Tensor, sigma: float) -> Observation:
    return Observation(step, steps, feature, torch.tensor([step]), 1 - sigma, sigma, (8, 8), feature, Identity(), {})


def test_the_gate_ignores_high_frequency_flicker_while_noise_dominates() -> None:
    # A constant image plus a ±0.5 checkerboard whose sign flips every step: unfiltered, consecutive steps
    # differ by relL1 = 1. Filtered, the change is (H(½)/H(0))² of the DC level: tiny at σ = 0.95, so steps
    # 1-4 reuse; ≈1 at σ = 0.05, so every step computes.
    steps, grid = 6, torch.arange(64).reshape(8, 8)
    checker = ((grid // 8 + grid % 8) % 2 * 2 - 1).float().reshape(1, 64, 1).repeat(1, 1, 2)
    features = [1 + 0.5 * (-1) ** k * checker for k in range(steps)]
    for sigma, expected in ((0.95, [True, False, False, False, False, True]), (0.05, [True] * steps)):
        ratio = (gain(0.5, sigma) / gain(0, sigma)) ** 2
        assert (ratio < 1e-3) if sigma > 0.5 else (ratio > 0.99)
        gate = SeaCacheGate(0.3, 2.0)
        assert [gate.decide(observe(k, steps, f, sigma)) for k, f in enumerate(features)] == expected
        # Per step: modulation and distance (4/element), the filter product (2/element), FFT + iFFT of 64
        # points for each of the 2 channels (2 · 2.5 · 64 · 6 · 2).
        assert gate.overhead_macs == steps * (6 * 128 + 2 * 2.5 * 64 * 6 * 2)


def test_seacache_runs_end_to_end_and_restores_the_pipeline(policy_case) -> None:  # type: ignore[no-untyped-def]
    pipe, call, kwargs, model = policy_case
    uncached = call(pipe, kwargs)
    with apply_policy(pipe, policy_config("seacache", threshold=0.0)) as exact:
        assert torch.equal(call(pipe, kwargs), uncached), "threshold 0 is the uncached output bit for bit"
    assert exact.decisions == [[True] * STEPS]
    config = policy_config("seacache", threshold=0.5)
    with apply_policy(pipe, config) as handle:
        first, second = call(pipe, kwargs), call(pipe, kwargs)
    assert torch.equal(first, second) and handle.decisions[0] == handle.decisions[1], "repeated calls agree"
    ran = handle.decisions[0]
    assert ran[0] and ran[-1] and not all(ran), "first and last steps forced, some steps reused"
    assert handle.runs[0].overhead_macs > 0 and not torch.equal(first, uncached)
    assert torch.equal(call(pipe, kwargs), uncached), "disabling restores the pipeline exactly"
    spec = get_model(model)
    settings = EvaluationSettings(model, "fidelity", ("x",), 1, STEPS, spec.guidance_scale, spec.resolution)
    realised = handle.realised_schedule(run_template(spec, settings))
    mask = np.concatenate([m.reshape(STEPS, -1) for m in realised.masks.values()], axis=1)
    assert [bool(mask[s].all()) for s in range(STEPS)] == ran and not mask[~np.array(ran)].any()
    assert realised.provenance == {
        "method": "policy",
        "policy": "seacache",
        "knobs": config.knobs(),
        "skipped": "reused",
    }
