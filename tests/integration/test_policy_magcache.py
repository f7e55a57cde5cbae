"""MagCache: the gate on hand-made ratio tables (error limit, skip limit, retention), nearest-index
resampling, the reference's FLUX simulation, calibration against an independent recomputation on plain
uncached runs of digits and tiny PixArt-α, and end to end on tiny PixArt-α, tiny FLUX and digits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from ecad_search.evaluation import EvaluationSettings, run_template
from ecad_search.generation import GenerationSettings, generate, load_pipeline
from ecad_search.models import get_model
from ecad_search.models.blocks import block_input, block_output
from ecad_search.policies import PolicyError, apply_policy, policy_config
from ecad_search.policies.magcache import MagCacheConfig, calibrate, nearest_ratios

# Hand-made table: after two retained steps each step shrinks the residual by 1 %, step 8 by 10 %.
TABLE = (1.0, 1.0, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.9, 0.99)


STEPS = 8


def calibrate_on(pipe: Any, spec: Any, prompts: list[str], settings: GenerationSettings) -> dict[str, Any]:
    """The policy's calibration from uncached runs of `prompts` at `settings`, as `ecad-search calibrate` runs it."""
    return calibrate(
        pipe, prompts, lambda batch: generate(pipe, spec, batch, settings, output_type="pt"), settings.steps
    )


def computed(config: MagCacheConfig, steps: int) -> list[bool]:
    gate = config.gate()
    return [gate.rule(step, steps) for step in range(steps)]


def test_the_gate_stops_reusing_at_the_error_or_the_skip_limit() -> None:
    # K=3, δ=0.1, retention 0.2 → steps 0, 1 compute. Then ratio .99, .9801, .970299 with err .01, .0299,
    # .059601 reuse; step 5 is a 4th skip (> K) and computes (reset); steps 6, 7 reuse (err .01, .0299); step
    # 8: ratio .9801·.9 = .88209, err .0299 + .11791 = .14781 > δ computes; step 9 reuses (not forced).
    config = MagCacheConfig(threshold=0.1, max_skips=3, retention=0.2, ratios=TABLE)
    assert computed(config, 10) == [True, True, False, False, False, True, False, False, True, False]
    # K=5: step 5 reuses (err .059601 + .039404 = .099005 ≤ .1), step 6 exceeds δ (+ .04901); step 7 reuses
    # (.01), step 8 computes (.01 + .109 = .119).
    config = MagCacheConfig(threshold=0.1, max_skips=5, retention=0.2, ratios=TABLE)
    assert computed(config, 10) == [True, True, False, False, False, False, True, False, True, False]
    # Retention 0.5 → steps 0-4 compute; 5-7 reuse (err .059601); step 8: ratio .8732691, err .186 computes.
    config = MagCacheConfig(threshold=0.1, max_skips=5, retention=0.5, ratios=TABLE)
    assert computed(config, 10) == [True, True, True, True, True, False, False, False, True, False]
    # Retention 0: step 0 still computes (nothing to reuse), and step 1 (γ = 1, err 0) reuses.
    assert computed(MagCacheConfig(retention=0.0, ratios=TABLE), 10)[:2] == [True, False]
    assert all(computed(MagCacheConfig(threshold=0.0, retention=0.2, ratios=TABLE), 10)), "δ=0 computes all"
    assert all(computed(MagCacheConfig(max_skips=0, ratios=TABLE), 10)), "K=0 computes every step"


def test_a_table_of_another_length_is_read_at_the_nearest_index() -> None:
    # 5 entries on 9 steps: index round(i/2), half to even → 0, 0, 1, 2, 2, 2, 3, 4, 4.
    assert nearest_ratios((1.0, 2.0, 3.0, 4.0, 5.0), 9) == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0]
    # 9 entries on 3 steps: indices 0, 4, 8.
    assert nearest_ratios(tuple(float(k) for k in range(9)), 3) == [0.0, 4.0, 8.0]
    assert nearest_ratios(TABLE, 10) == list(TABLE)


def test_the_reference_flux_simulation() -> None:
    # diffusers' published FLUX table (28 steps) at the FLUX defaults: the reference simulates 15 computes at
    # 50 steps, and [0, 1, 2, 5, 9, 11, 17, 23, 26] at 28 with the official script's forced step 11.
    config = MagCacheConfig(ratios=tuple(float(x) for x in FLUX_MAG_RATIOS))
    assert sum(computed(config, 50)) == 15
    assert [s for s, c in enumerate(computed(config, 28)) if c] == [0, 1, 2, 5, 9, 15, 21, 26]
    gate, forced = config.gate(), []
    for step in range(28):
        if step == 11:
            gate.ratio, gate.skips, gate.error = 1.0, 0, 0.0
        if step == 11 or gate.rule(step, 28):
            forced.append(step)
    assert forced == [0, 1, 2, 5, 9, 11, 17, 23, 26]


def test_an_uncalibrated_config_says_how_to_calibrate() -> None:
    assert MagCacheConfig().needs_calibration and not MagCacheConfig(ratios=(1.0,)).needs_calibration
    with pytest.raises(PolicyError, match=r"run `ecad-search calibrate magcache --model M`"):
        policy_config("magcache").gate()


def recomputed_ratios(pipe: Any, spec: Any, prompts: list[str], settings: GenerationSettings) -> list[float]:
    """γ_t from plain torch hooks on the first and last block of uncached runs, one run per prompt."""
    blocks = pipe.transformer.transformer_blocks
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    first = blocks[0].register_forward_pre_hook(
        lambda m, args, kwargs: inputs.append(block_input(args, kwargs)), with_kwargs=True
    )
    last = blocks[-1].register_forward_hook(lambda m, args, out: outputs.append(block_output(m, out)))
    try:
        tables = []
        for prompt in prompts:
            inputs.clear()
            outputs.clear()
            generate(pipe, spec, [prompt], settings, output_type="pt")
            norms = [torch.linalg.vector_norm(o - i, dim=-1) for i, o in zip(inputs, outputs, strict=True)]
            tables.append([1.0] + [float((norms[t] / norms[t - 1]).mean()) for t in range(1, len(norms))])
    finally:
        first.remove()
        last.remove()
    return np.mean(tables, axis=0).tolist()


@pytest.mark.parametrize("model", ["digits", "tiny-pixart"])
def test_calibration_measures_the_magnitude_ratios_of_uncached_runs(model: str, request) -> None:  # type: ignore[no-untyped-def]
    if model == "digits":
        spec = get_model("digits")
        pipe, prompts = load_pipeline(spec), ["a handwritten digit 3", "seven", "a handwritten digit 0"]
    else:
        spec = get_model(str(request.getfixturevalue("tiny_pixart_dir")))
        pipe = request.getfixturevalue("tiny_pixart_pipe")
        prompts = ["a red cat", "a blue house", "a green tree"]
    settings = GenerationSettings.for_model(spec, steps=STEPS)
    before, _ = generate(pipe, spec, prompts[:1], settings, output_type="pt")
    knobs = calibrate_on(pipe, spec, prompts, settings)
    assert set(knobs) == {"ratios"} and len(knobs["ratios"]) == STEPS and knobs["ratios"][0] == 1.0
    expected = recomputed_ratios(pipe, spec, prompts, settings)
    assert np.allclose(knobs["ratios"], expected, rtol=1e-5, atol=0), (knobs["ratios"], expected)
    assert len(set(knobs["ratios"])) == STEPS, "every step has its own measured ratio"
    after, _ = generate(pipe, spec, prompts[:1], settings, output_type="pt")
    assert torch.equal(before, after), "calibration leaves the pipeline as it was"
    assert not policy_config("magcache", **knobs).needs_calibration


def test_magcache_runs_end_to_end_and_restores_the_pipeline(policy_case) -> None:  # type: ignore[no-untyped-def]
    pipe, call, kwargs, model = policy_case
    spec = get_model(model)
    size = kwargs.get("height", spec.resolution)
    settings = GenerationSettings(STEPS, spec.guidance_scale, size, size)
    ratios = calibrate_on(pipe, spec, ["a handwritten digit 1", "a handwritten digit 8"], settings)["ratios"]
    uncached = call(pipe, kwargs)
    with apply_policy(pipe, policy_config("magcache", threshold=0.0, ratios=tuple(ratios))) as exact:
        assert torch.equal(call(pipe, kwargs), uncached), "threshold 0 is the uncached output bit for bit"
    assert exact.decisions == [[True] * STEPS]
    config = policy_config("magcache", ratios=tuple(ratios))
    with apply_policy(pipe, config) as handle:
        first, second = call(pipe, kwargs), call(pipe, kwargs)
    assert torch.equal(first, second) and handle.decisions[0] == handle.decisions[1], "repeated calls agree"
    ran = handle.decisions[0]
    assert ran == computed(config, STEPS), "the decisions are the rule on the table, nothing else"
    assert ran[0] and not all(ran) and handle.runs[0].overhead_macs == 0
    assert not torch.equal(first, uncached)
    assert torch.equal(call(pipe, kwargs), uncached), "disabling restores the pipeline exactly"
    template = run_template(spec, EvaluationSettings(model, "fidelity", ("x",), 1, STEPS, spec.guidance_scale, size))
    realised = handle.realised_schedule(template)
    mask = np.concatenate([m.reshape(STEPS, -1) for m in realised.masks.values()], axis=1)
    assert [bool(mask[s].all()) for s in range(STEPS)] == ran and not mask[~np.array(ran)].any()
    assert realised.provenance == {
        "method": "policy",
        "policy": "magcache",
        "knobs": config.knobs(),
        "skipped": "reused",
    }
