"""DiCache: the probe's accumulated change decides (forced steps, reset on refresh), γ is clipped to
[1, γ_max], a reused step is the hand-computed extrapolation of the last two residuals, and end to end on tiny
PixArt-α, tiny FLUX and digits (threshold 0 is the uncached output bit for bit, the probe blocks run on every
step, the pipeline is restored, the gate's own MACs are what the reused and computed steps cost)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ecad_search.evaluation import EvaluationSettings, run_template
from ecad_search.generation import load_pipeline
from ecad_search.models import get_model
from ecad_search.policies import Observation, PolicyError, apply_policy, policy_config
from ecad_search.policies.dicache import DiCacheConfig, DiCacheGate, aligned_output, alignment_gamma

STEPS = 8


def probe_decisions(config: DiCacheConfig, probes: list[float]) -> list[bool]:
    gate = DiCacheGate(config)
    return [gate.rule(step, len(probes), torch.full((4,), value)) for step, value in enumerate(probes)]


def test_the_probe_change_accumulates_resets_on_refresh_and_forced_steps_compute() -> None:
    # Each step changes the probe by 10 %: 0.1, 0.2 reuse, 0.3 refreshes and resets, 0.1, 0.2 reuse, ...
    probes = [1.1**k for k in range(7)]
    assert probe_decisions(DiCacheConfig(0.25, ret_ratio=0.0), probes) == [True, False, False, True, False, False, True]
    # int(0.3·7) = 2: steps 0–2 are forced and the accumulation starts from 0 after them.
    assert probe_decisions(DiCacheConfig(0.25, ret_ratio=0.3), probes) == [True, True, True, False, False, True, True]
    # The last step is forced (FLUX convention) unless told otherwise.
    assert probe_decisions(DiCacheConfig(0.25, ret_ratio=0.0), probes[:6])[-1]
    assert not probe_decisions(DiCacheConfig(0.25, ret_ratio=0.0, force_last=False), probes[:6])[-1]
    assert all(probe_decisions(DiCacheConfig(0.0, ret_ratio=0.0), probes)), "a threshold of 0 computes every step"


def test_gamma_is_clipped_to_one_and_gamma_max() -> None:
    older, newer = torch.zeros(4), torch.tensor([1.0, -1.0, 2.0, -2.0])  # mean |newer − older| = 1.5
    assert alignment_gamma(0.5 * newer, older, newer, 1.5) == 1.0, "raw 0.5: never interpolates back"
    assert alignment_gamma(1.2 * newer, older, newer, 1.5) == pytest.approx(1.2), "raw 1.2: inside"
    assert alignment_gamma(3.0 * newer, older, newer, 1.5) == 1.5, "raw 3: clipped to γ_max"
    assert alignment_gamma(3.0 * newer, older, newer, 2.0) == 2.0
    with pytest.raises(PolicyError, match="gamma_max must be a finite number of at least 1"):
        policy_config("dicache", gamma_max=0.5)


def observation(step: int, x: list[float], probe: list[float]) -> Observation:
    """A real observation of a one-token stack with two channels (the block fields are not read)."""
    latent = torch.zeros(1, 2)
    return Observation(step, 4, latent, torch.tensor(0), 1.0, 0.0, (1, 1), torch.tensor(x), nn.Identity(), {},
                       torch.tensor(probe))  # fmt: skip


def test_a_reused_step_follows_the_line_through_the_last_two_residuals() -> None:
    assert torch.equal(aligned_output(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([1.5]), 1.5),
                       torch.tensor([3.0])), "1 + 0.5 + 1.5·(1.5 − 0.5)"  # fmt: skip
    gate = DiCacheGate(DiCacheConfig(gamma_max=1.5))
    first = observation(0, [0.0, 0.0], [0.0, 0.0])  # P = [0, 0]
    gate.observe(first, torch.tensor([1.0, 2.0]))  # R = [1, 2]
    reused = observation(1, [5.0, 5.0], [6.0, 6.0])
    one = gate.reused_output(reused, reused.stack_input, torch.tensor([1.0, 2.0]))
    assert torch.equal(one, torch.tensor([6.0, 7.0])), "one cached residual: x + R"
    gate.observe(observation(1, [1.0, 1.0], [2.0, 1.0]), torch.tensor([3.0, 5.0]))  # P = [1, 0], R = [2, 4]
    # p − x = [1.5, 0.5]: mean distance from P[-2] 1.0 over mean |P[-1] − P[-2]| 0.5 → γ = 2, clipped to 1.5.
    reused = observation(2, [2.0, 2.0], [3.5, 2.5])
    output = gate.reused_output(reused, reused.stack_input, torch.tensor([2.0, 4.0]))
    assert torch.equal(output, torch.tensor([4.5, 7.0])), "[2, 2] + [1, 2] + 1.5·[1, 2]"
    gate.config = DiCacheConfig(gamma_max=3.0)
    output = gate.reused_output(reused, reused.stack_input, torch.tensor([2.0, 4.0]))
    assert torch.equal(output, torch.tensor([5.0, 8.0])), "γ = 2 inside [1, 3]: [2, 2] + [1, 2] + 2·[1, 2]"


def digits_call(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    prompts = [f"a handwritten digit {d}" for d in range(10)]
    return pipe(prompts, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                output_type="pt").images  # fmt: skip


def pixart_call(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    return pipe(["a red cat", "a blue house"], num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                output_type="pt", guidance_scale=4.5, **kwargs).images  # fmt: skip


def flux_call(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    return pipe("a red cat", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                output_type="pt", **kwargs).images  # fmt: skip


# Per model: how to call it, and a threshold that reuses some steps of 8 (the tiny random PixArt's probe
# changes by more than 0.4 per step, so its threshold is higher).
@pytest.fixture(params=["tiny-pixart", "tiny-flux", "digits"])
def case(request: pytest.FixtureRequest) -> tuple[Any, Any, dict[str, Any], str, float]:
    if request.param == "digits":
        return load_pipeline(get_model("digits")), digits_call, {}, "digits", 0.4
    if request.param == "tiny-flux":
        pipe, kwargs = request.getfixturevalue("tiny_flux_pipe"), request.getfixturevalue("flux_call_kwargs")
        return pipe, flux_call, kwargs, str(request.getfixturevalue("tiny_flux_dir")), 0.1
    pipe, kwargs = request.getfixturevalue("tiny_pixart_pipe"), request.getfixturevalue("pixart_call_kwargs")
    return pipe, pixart_call, kwargs, str(request.getfixturevalue("tiny_pixart_dir")), 2.0


def test_dicache_runs_end_to_end_with_the_probe_blocks_on_every_step(case) -> None:  # type: ignore[no-untyped-def]
    pipe, call, kwargs, model, threshold = case
    uncached = call(pipe, kwargs)
    with apply_policy(pipe, policy_config("dicache", threshold=0.0)) as exact:
        assert torch.equal(call(pipe, kwargs), uncached), "computing every step is the uncached output bit for bit"
    assert exact.decisions == [[True] * STEPS]
    config = policy_config("dicache", threshold=threshold)
    with apply_policy(pipe, config) as handle:
        first, second = call(pipe, kwargs), call(pipe, kwargs)
    assert torch.equal(first, second) and handle.decisions[0] == handle.decisions[1], "repeated calls agree"
    ran = handle.decisions[0]
    assert ran[:2] == [True, True] and ran[-1], "steps ≤ int(0.2·8) and the last are forced"
    assert not all(ran) and not torch.equal(first, uncached), "some steps reused"
    assert torch.equal(call(pipe, kwargs), uncached), "disabling restores the pipeline exactly"
    spec = get_model(model)
    settings = EvaluationSettings(model, "fidelity", ("x",), 1, STEPS, spec.guidance_scale, spec.resolution)
    realised = handle.realised_schedule(run_template(spec, settings))
    mask = np.concatenate([m.reshape(STEPS, -1) for m in realised.masks.values()], axis=1)
    components = next(iter(realised.masks.values())).shape[2]
    assert mask[:, :components].all(), "the probe block runs on every step"
    assert [bool(mask[s, components:].all()) for s in range(STEPS)] == ran
    assert [not mask[s, components:].any() for s in range(STEPS)] == [not r for r in ran]
    assert realised.provenance == {
        "method": "policy",
        "policy": "dicache",
        "knobs": config.knobs(),
        "skipped": "extrapolated",
    }


def test_dicache_counts_the_alignment_on_every_reused_step_and_probes_deeper_on_request() -> None:
    spec = get_model("digits")
    pipe = load_pipeline(spec)
    with apply_policy(pipe, policy_config("dicache", threshold=0.2)) as handle:
        digits_call(pipe, {})
    ran = handle.decisions[0]
    computed = sum(ran)
    assert 2 < computed < STEPS
    # The stack's stream: 10 prompts with their guidance pair × 8·8 tokens × the width. Per step the probe
    # distance (3 per element), per computed step the two residuals (2), per reused one γ and the line (11):
    # every reuse came after the two forced steps, so each took the aligned path.
    c = spec.transformer_config
    elements = 20 * c["sample_size"] ** 2 * c["num_attention_heads"] * c["attention_head_dim"]
    assert handle.runs[0].overhead_macs == elements * (3 * STEPS + 2 * computed + 11 * (STEPS - computed))
    config = policy_config("dicache", threshold=0.2, probe_blocks=2)
    with apply_policy(pipe, config) as handle:
        digits_call(pipe, {})
    settings = EvaluationSettings("digits", "fidelity", ("x",), 1, STEPS, spec.guidance_scale, spec.resolution)
    mask = handle.realised_schedule(run_template(spec, settings)).mask("transformer_blocks")
    assert mask[:, :2].all() and [bool(mask[s, 2:].all()) for s in range(STEPS)] == handle.decisions[0]
    assert not all(handle.decisions[0])
