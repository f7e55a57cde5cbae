"""TaylorSeer and FORA, the per-component policies: their schedules and TaylorSeer's forecast on hand-made
tensors, and end to end on tiny PixArt-α, tiny FLUX and digits (interval 1 is the uncached output bit for bit,
FORA is the `heuristics.fora` schedule bit for bit, TaylorSeer of order 0 is plain reuse of its schedule bit
for bit, the pipeline is restored exactly and the realised mask is what ran)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import pixart_call

from ecad_search import CacheSchedule, apply_schedule
from ecad_search.evaluation import EvaluationSettings, run_template
from ecad_search.heuristics import fora
from ecad_search.models import get_model
from ecad_search.models.blocks import discover_block_groups
from ecad_search.policies import PolicyError, apply_policy, policy_config
from ecad_search.policies.fora import ForaConfig, refresh_steps
from ecad_search.policies.taylorseer import TaylorSeerConfig, full_steps
from ecad_search.runtime.forecast import Forecast, TaylorForecaster

STEPS = 8


def test_schedules_are_the_hand_computed_steps() -> None:
    # TaylorSeer: warm-up steps, then every interval-th step after the last warm-up step; the last step is free.
    assert full_steps(20, 6, 3) == [0, 1, 2, 8, 14]
    assert TaylorSeerConfig().computed_steps(50) == [0, 1, 2, 8, 14, 20, 26, 32, 38, 44]
    assert full_steps(8, 3, 3) == [0, 1, 2, 5]
    assert full_steps(10, 4, 1) == [0, 4, 8]
    assert full_steps(7, 1, 3) == list(range(7)), "interval 1 computes every step"
    # FORA: every interval-th step from 0, and the last; without it, exactly heuristics.fora.
    assert refresh_steps(8, 3, True) == [0, 3, 6, 7]
    assert ForaConfig().computed_steps(20) == [0, 3, 6, 9, 12, 15, 18, 19]
    assert refresh_steps(8, 3, False) == [0, 3, 6]
    assert refresh_steps(9, 4, True) == [0, 4, 8], "a last step on the interval is not counted twice"
    assert isinstance(policy_config("taylorseer", interval=4), TaylorSeerConfig)
    with pytest.raises(PolicyError, match="warmup must be a whole number of at least 1"):
        TaylorSeerConfig(warmup=0)
    with pytest.raises(PolicyError, match="interval must be a whole number of at least 1"):
        ForaConfig(interval=0)
    with pytest.raises(PolicyError, match="not a step gate"):
        ForaConfig().gate()


def drive(forecaster: TaylorForecaster, truth: Any, computed: list[int], steps: int) -> dict[int, Any]:
    """The forecaster over a run: updated with `truth(k)` at the computed steps, forecasting the others."""
    kept: Forecast | None = None
    forecasts = {}
    for step in range(steps):
        if step in computed:
            kept = forecaster.update(kept, truth(step), step)
            assert len(kept.terms) <= forecaster.max_order + 1, "O + 1 tensors per component"
        else:
            assert kept is not None
            forecasts[step] = forecaster.forecast(kept, step)
    return forecasts


@pytest.mark.parametrize("order", [1, 2])
def test_the_forecast_of_a_linear_output_is_exact(order: int) -> None:
    a, b = torch.randn(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    computed = full_steps(20, 6, 3)
    forecasts = drive(TaylorForecaster(order, 3), lambda k: a + b * k, computed, 20)
    assert sorted(forecasts) == [s for s in range(20) if s not in computed]
    for step, forecast in forecasts.items():
        assert torch.allclose(forecast, a + b * step, rtol=0, atol=1e-12)
    # A tuple output (FLUX's double-stream attention: image and text streams) is forecast part by part.
    pairs = drive(TaylorForecaster(order, 3), lambda k: (a + b * k, 2 * a - b * k), computed, 20)
    assert torch.allclose(pairs[17][0], a + 17 * b, atol=1e-12) and torch.allclose(pairs[17][1], 2 * a - 17 * b)


def test_the_forecast_of_a_quadratic_is_the_reference_taylor_sum_of_backward_differences() -> None:
    # F = c·k², order 2, full steps 0, 1, 2, 8, 14. Step 2 (the last warm-up step) takes the first difference,
    # D¹ = F₂ − F₁ = 3c, and no second one (step 1 kept D⁰ only), so steps 3..7 extrapolate linearly: 4c + 3c·x.
    # Step 8: D¹ = (64c − 4c)/6 = 10c, D² = (10c − 3c)/6 = 7c/6. Step 14: D¹ = (196c − 64c)/6 = 22c, D² = 2c, so
    # 15..19 get 196c + 22c·x + c·x² = c(14 + x)² − 6c·x: backward differences are off by Δk·x per unit of c,
    # i.e. the reference's sum is exact only up to degree 1 in the step index (not up to the order).
    c = torch.full((4,), 0.5, dtype=torch.float64)
    forecasts = drive(TaylorForecaster(2, 3), lambda k: c * k**2, full_steps(20, 6, 3), 20)
    for x in range(1, 6):
        assert torch.allclose(forecasts[2 + x], c * (4 + 3 * x), atol=1e-12)
        assert torch.allclose(forecasts[8 + x], c * (64 + 10 * x + 7 / 12 * x**2), atol=1e-12)
        assert torch.allclose(forecasts[14 + x], c * ((14 + x) ** 2 - 6 * x), atol=1e-12)


def test_order_zero_reuses_the_output_itself_and_macs_are_counted_per_element() -> None:
    output = torch.randn(2, 3)
    kept = TaylorForecaster(0, 3).update(None, output, 0)
    assert TaylorForecaster(0, 3).forecast(kept, 4) is output and kept.macs == 0
    # Order 1 over full steps 0, 1, 2, 8 of 6-element outputs: a difference at 2 and 8 (steps before the last
    # warm-up step take none), one Taylor term at each of the 5 skipped steps 3..7: 7 × 6 multiply-adds.
    forecaster, kept = TaylorForecaster(1, 3), None
    for step in range(9):
        if step in (0, 1, 2, 8):
            kept = forecaster.update(kept, torch.full((2, 3), float(step)), step)
        else:
            forecaster.forecast(kept, step)
    assert kept is not None and kept.macs == 7 * 6


def on_steps(groups: Any, steps: list[int]) -> CacheSchedule:
    """Every component computes on `steps` and is reused on the others."""
    rows = np.isin(np.arange(STEPS), steps)[:, None, None]
    masks = {g.name: np.broadcast_to(rows, (STEPS, g.num_blocks, len(g.components))) for g in groups}
    return CacheSchedule(groups, masks)


def test_both_policies_run_end_to_end_and_restore_the_pipeline(policy_case) -> None:  # type: ignore[no-untyped-def]
    pipe, call, kwargs, model = policy_case
    groups = discover_block_groups(pipe.transformer)
    uncached = call(pipe, kwargs)
    for name in ("fora", "taylorseer"):
        with apply_policy(pipe, policy_config(name, interval=1)) as exact:
            assert torch.equal(call(pipe, kwargs), uncached), f"{name}: interval 1 is the uncached output"
        # No step is skipped, so no difference is ever needed: TaylorSeer spends nothing either.
        assert exact.decisions == [[True] * STEPS] and exact.runs[0].overhead_macs == 0

    # FORA is the heuristic schedule bit for bit: without the last step exactly heuristics.fora, with it (the
    # reference's default) that mask with the last step computing.
    with apply_policy(pipe, policy_config("fora", interval=3, refresh_last=False)):
        plain_fora = call(pipe, kwargs)
    with apply_schedule(pipe, fora(groups, STEPS, 3)):
        assert torch.equal(call(pipe, kwargs), plain_fora)
    with apply_policy(pipe, policy_config("fora")) as fora_handle:
        fora_images = call(pipe, kwargs)
    with apply_schedule(pipe, on_steps(groups, [0, 3, 6, 7])) as fora_schedule:
        assert torch.equal(call(pipe, kwargs), fora_images)
    assert fora_handle.decisions == [[s in (0, 3, 6, 7) for s in range(STEPS)]]
    assert fora_handle.runs[0].overhead_macs == 0 and not torch.equal(fora_images, uncached)

    # TaylorSeer of order 0 is plain reuse of its schedule, bit for bit.
    computed = [0, 1, 2, 5]
    with apply_policy(pipe, policy_config("taylorseer", interval=3, max_order=0)):
        reused = call(pipe, kwargs)
    with apply_schedule(pipe, on_steps(groups, computed)):
        assert torch.equal(call(pipe, kwargs), reused)

    config = policy_config("taylorseer", interval=3, max_order=2)
    with apply_policy(pipe, config) as handle:
        first, second = call(pipe, kwargs), call(pipe, kwargs)
    assert torch.equal(first, second), "repeated calls agree"
    assert handle.decisions == [[s in computed for s in range(STEPS)]] * 2
    assert not torch.equal(first, reused) and not torch.equal(first, uncached), "the forecast is not plain reuse"
    assert handle.runs[0].overhead_macs == handle.runs[1].overhead_macs > 0
    # O + 1 = 3 outputs kept per component, against FORA's one.
    assert handle.stats.peak_bytes == 3 * fora_schedule.stats.peak_bytes > 0
    assert torch.equal(call(pipe, kwargs), uncached), "disabling restores the pipeline exactly"
    assert "set_timesteps" not in vars(pipe.scheduler)

    spec = get_model(model)
    settings = EvaluationSettings(model, "fidelity", ("x",), 1, STEPS, spec.guidance_scale, spec.resolution)
    realised = handle.realised_schedule(run_template(spec, settings))
    assert realised.same_mask(on_steps(groups, computed)) and realised.name == "taylorseer"
    assert realised.provenance == {
        "method": "policy",
        "policy": "taylorseer",
        "knobs": config.knobs(),
        "skipped": "forecast",
    }
    assert fora_handle.realised_schedule(run_template(spec, settings)).same_mask(on_steps(groups, [0, 3, 6, 7]))


def test_step_count_and_an_applied_schedule(tiny_pixart_pipe, pixart_call_kwargs) -> None:  # type: ignore[no-untyped-def]
    # The schedule is rebuilt for each run's step count; and the evaluator keeps a schedule applied and applies
    # a policy on top: the policy must still run as it does alone.
    groups = discover_block_groups(tiny_pixart_pipe.transformer)
    with apply_policy(tiny_pixart_pipe, policy_config("taylorseer", interval=3)) as alone:
        expected = pixart_call(tiny_pixart_pipe, pixart_call_kwargs)
        generator = torch.Generator().manual_seed(0)
        tiny_pixart_pipe("a cat", num_inference_steps=5, generator=generator, output_type="pt", **pixart_call_kwargs)
    assert alone.decisions[1] == [True, True, True, False, False], "the schedule is rebuilt for 5 steps"
    template = CacheSchedule.all_compute(groups, STEPS)
    with apply_schedule(tiny_pixart_pipe, template), apply_policy(tiny_pixart_pipe, alone.config) as stacked:
        assert torch.equal(pixart_call(tiny_pixart_pipe, pixart_call_kwargs), expected)
    assert stacked.decisions == alone.decisions[:1]
