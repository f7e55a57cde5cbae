"""Online policies on the hook runtime: each decision rule on hand-computed features, and end to end on tiny
PixArt-α and the bundled digits model (a threshold of 0 is the uncached output bit for bit, the pipeline is
restored exactly, and the realised mask is what ran)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch

from ecad_search.evaluation import EvaluationSettings, run_template
from ecad_search.models import get_model
from ecad_search.policies import PolicyError, apply_policy, policy_config
from ecad_search.policies.first_block_cache import FirstBlockGate
from ecad_search.policies.spectrum import SpectrumConfig, forecast, forward_steps, time_of
from ecad_search.policies.teacache import TeaCacheGate

STEPS = 8


def decisions(gate: Any, features: list[float]) -> list[bool]:
    """A gate's rule on hand-made features (each a constant tensor), step by step."""
    n = len(features)
    if isinstance(gate, FirstBlockGate):
        return [gate.rule(torch.full((4,), value)) for value in features]
    return [gate.rule(step, n, torch.full((4,), value)) for step, value in enumerate(features)]


def test_teacache_accumulates_relative_change_and_resets_on_refresh() -> None:
    # Each step changes the feature by 10 %: 0.1 accumulates to 0.2 (reuse), 0.3 (compute, reset), ...
    features = [1.1**k for k in range(7)]
    assert decisions(TeaCacheGate(0.25, ()), features) == [True, False, False, True, False, False, True]
    # Rescaled by 2x: 0.2 reuses, 0.4 computes and resets, the last step always computes.
    assert decisions(TeaCacheGate(0.25, (2.0, 0.0)), features) == [True, False, True, False, True, False, True]
    assert all(decisions(TeaCacheGate(0.0, ()), features)), "a threshold of 0 computes every step"


def test_first_block_cache_compares_with_the_last_refresh_not_the_last_step() -> None:
    # 3 % from the reference reuses; 6 % computes and becomes the reference; 1 % from it reuses again.
    assert decisions(FirstBlockGate(0.05), [1.0, 1.03, 1.06, 1.07, 1.10, 1.12]) == [
        True, False, True, False, False, True,
    ]  # fmt: skip
    assert all(decisions(FirstBlockGate(0.0), [1.0, 1.0, 1.0])), "a threshold of 0 computes every step"


def test_spectrum_thins_its_forwards_as_the_reference_schedules_them() -> None:
    assert forward_steps(50, 5, 2, 0.75) == [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]
    assert forward_steps(50, 5, 2, 3.0) == [0, 1, 2, 3, 4, 6, 11, 19, 30, 44]
    assert forward_steps(50, 5, 2, 1.0) == [0, 1, 2, 3, 4, 6, 9, 13, 18, 24, 31, 39, 48]
    assert forward_steps(50, 5, 2, 0.0) == [0, 1, 2, 3, 4, *range(6, 50, 2)]


def test_spectrum_forecasts_a_low_order_polynomial_exactly() -> None:
    a, b, c = torch.randn(3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    times = [time_of(k, 50) for k in (0, 1, 2, 3, 4, 6)]
    outputs = [a + b * t + c * t**2 for t in times]
    for step in (7, 20, 49):
        tau = time_of(step, 50)
        predicted = forecast(times, outputs, tau, SpectrumConfig(ridge=0.0))
        assert torch.allclose(predicted, a + b * tau + c * tau**2, rtol=0, atol=1e-9)
    blended = forecast(times[:2], outputs[:2], times[2], SpectrumConfig(ridge=0.0, degree=1, blend=0.0))
    assert torch.allclose(blended, 2 * outputs[1] - outputs[0], atol=1e-12), "w = 0 is the linear extrapolation"


def test_unknown_policies_and_knobs_are_one_line_errors() -> None:
    with pytest.raises(PolicyError, match="unknown policy 'magic': use one of dicache, first-block-cache, fora"):
        policy_config("magic")
    with pytest.raises(PolicyError, match="policy 'teacache' has no knob 'delta': use threshold, coefficients"):
        policy_config("teacache", delta=0.1)


# Per policy: knobs that compute every step (the uncached output, bit for bit), and knobs that reuse some.
KNOBS = {
    "teacache": ({"threshold": 0.0}, {"threshold": 0.5}),
    "first-block-cache": ({"threshold": 0.0}, {"threshold": 0.5}),
    "spectrum": ({"warmup": STEPS}, {"warmup": 2}),
}


@pytest.mark.parametrize("name", list(KNOBS))
def test_a_policy_runs_end_to_end_and_restores_the_pipeline(policy_case, name) -> None:  # type: ignore[no-untyped-def]
    pipe, call, kwargs, model = policy_case
    exact_knobs, caching_knobs = KNOBS[name]
    uncached = call(pipe, kwargs)
    with apply_policy(pipe, policy_config(name, **exact_knobs)) as exact:
        assert torch.equal(call(pipe, kwargs), uncached), "computing every step is the uncached output bit for bit"
    assert exact.decisions == [[True] * STEPS]
    with apply_policy(pipe, policy_config(name, **caching_knobs)) as handle:
        first, second = call(pipe, kwargs), call(pipe, kwargs)
    assert torch.equal(first, second) and handle.decisions[0] == handle.decisions[1], "repeated calls agree"
    ran = handle.decisions[0]
    assert len(ran) == STEPS and ran[0] and not all(ran), "one decision per step, some steps reused"
    assert not torch.equal(first, uncached)
    assert torch.equal(call(pipe, kwargs), uncached), "disabling restores the pipeline exactly"
    spec = get_model(model)
    settings = EvaluationSettings(model, "fidelity", ("x",), 1, STEPS, spec.guidance_scale, spec.resolution)
    realised = handle.realised_schedule(run_template(spec, settings))
    mask = np.concatenate([m.reshape(STEPS, -1) for m in realised.masks.values()], axis=1)
    assert [bool(mask[s].all()) for s in range(STEPS)] == ran
    leading = policy_config(name, **caching_knobs).leading_blocks
    components = next(iter(realised.masks.values())).shape[2]
    assert mask[:, : leading * components].all() and not mask[:, leading * components :].all(), "leading blocks"
    config = policy_config(name, **caching_knobs)
    assert realised.provenance == {
        "method": "policy",
        "policy": name,
        "knobs": config.knobs(),
        "skipped": config.skipped,
    }


def test_generate_with_a_policy_prints_what_ran_and_saves_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from ecad_search.cli import app
    from ecad_search.cost import estimate_macs
    from ecad_search.formats import load_schedule

    args = [
        "generate", "--model", "digits", "--prompt", "seven", "--policy", "first-block-cache",
        "--set", "threshold=0.1", "--out", str(tmp_path / "7.png"), "--realised", str(tmp_path / "7.json"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    realised = load_schedule(tmp_path / "7.json")
    mask = realised.mask("transformer_blocks")
    computed = int(mask[:, 1:].any(axis=(1, 2)).sum())
    assert f"first-block-cache: computed {computed} of 20 steps" in result.output and 0 < computed < 20
    plain = estimate_macs(realised.with_metadata(masks={"transformer_blocks": mask | True}), "digits")
    saved = 1 - estimate_macs(realised, "digits") / plain
    printed = float(re.search(r"([0-9.]+)% of MACs saved", result.output)[1]) / 100  # type: ignore[index]
    assert saved - 0.001 <= printed <= saved, "the forwards saved, less the policy's own small arithmetic"
    assert realised.provenance["policy"] == "first-block-cache" and realised.provenance["knobs"]["threshold"] == 0.1
    both = CliRunner().invoke(app, [*args[:5], "--policy", "teacache", "--schedule", str(tmp_path / "7.json")])
    assert both.exit_code == 2 and "give --schedule or --policy, not both" in both.output
