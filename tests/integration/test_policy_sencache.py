"""SenCache: the sensitivity score and the consecutive-skip limit on hand-made numbers, ε's two zones, the
nearest-timestep table lookup, the one-line error without a table, calibration on digits, tiny PixArt-α and tiny
FLUX (one row per step, in the transformer's timestep units), and end to end with a calibrated table (ε 0 is the
uncached output bit for bit, some steps reused otherwise, the realised mask is what ran, the pipeline restored)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from ecad_search.evaluation import EvaluationSettings, run_template
from ecad_search.generation import GenerationSettings, generate, load_pipeline
from ecad_search.models import get_model
from ecad_search.policies import PolicyError, apply_policy, policy_config
from ecad_search.policies.sencache import SenCacheConfig, SenCacheGate, calibrate, nearest_row, sensitivity_score

STEPS = 8
TABLE = ((1000.0, 2.0, 0.001), (500.0, 4.0, 0.002))


def calibrate_on(pipe: Any, spec: Any, prompts: list[str], settings: GenerationSettings) -> dict[str, Any]:
    """The policy's calibration from uncached runs of `prompts` at `settings`, as `ecad-search calibrate` runs it."""
    return calibrate(
        pipe, prompts, lambda batch: generate(pipe, spec, batch, settings, output_type="pt"), settings.steps
    )


def decisions(config: SenCacheConfig, drifts: list[float], timesteps: list[float]) -> list[bool]:
    """The rule on one-sample latents of four elements (√numel = 2) moved by `drifts` along one axis."""
    gate = SenCacheGate(config)
    latents = [torch.tensor([[d, 0.0, 0.0, 0.0]]) for d in drifts]
    return [gate.rule(step, len(drifts), z, t) for step, (z, t) in enumerate(zip(latents, timesteps, strict=True))]


def test_the_score_reuses_under_epsilon_for_at_most_k_steps_with_the_reference_sensitivities() -> None:
    assert sensitivity_score(2.0, 0.001, 0.1, -100.0) == pytest.approx(0.3)
    config = SenCacheConfig(eps_start=0.5, eps_main=0.5, max_skips=2, table=TABLE)  # tolerance 0.5·√4 = 1
    drifts, timesteps = [0.0, 0.1, 0.3, 0.3, 0.55, 0.55], [1000.0, 900.0, 800.0, 700.0, 600.0, 500.0]
    # 1: 2·0.1 + 0.001·100 = 0.3 reuses; 2: 2·0.3 + 0.001·200 = 0.8 reuses; 3: 0.9 < 1 but two in a row, so it
    # computes and reads the row nearest t = 700 (500: Jx 4, Jt 0.002); 4: 4·0.25 + 0.002·100 = 1.2 computes
    # (with step 0's sensitivities it would be 0.6 and reuse); 5: the last step is forced.
    assert decisions(config, drifts, timesteps) == [True, False, False, True, True, True]
    one = SenCacheConfig(eps_start=0.5, eps_main=0.5, max_skips=1, table=TABLE)
    assert decisions(one, drifts, timesteps) == [True, False, True, False, True, True]
    for exact in (SenCacheConfig(eps_start=0, eps_main=0, table=TABLE), SenCacheConfig(max_skips=0, table=TABLE)):
        assert all(decisions(exact, drifts, timesteps)), "ε 0 or K 0 computes every step"


def test_epsilon_is_eps_start_for_the_first_fifth_of_the_steps_then_eps_main() -> None:
    # Every step moves the latent by 0.15 (Jx 2, Jt 0): 0.3 from the previous step, 0.6 from the one before.
    table = ((1000.0, 2.0, 0.0),)
    config = SenCacheConfig(eps_start=0.1, eps_main=1.0, max_skips=5, table=table)  # tolerances 0.2 and 2
    drifts = [0.15 * k for k in range(10)]
    # Steps 0, 1 (< 0.2·10) are in the start zone (0.3 ≥ 0.2 computes); from step 2 the scores 0.3, 0.6, ..., 1.5
    # stay under 2, but after K = 5 reuses step 7 computes; 8 reuses again and 9 is forced.
    assert decisions(config, drifts, [1000.0] * 10) == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
        False,
        True,
    ]
    wider = SenCacheConfig(eps_start=0.1, eps_main=1.0, max_skips=5, start_fraction=0.5, table=table)
    assert decisions(wider, drifts, [1000.0] * 10) == [True, True, True, True, True, False, False, False, False, True]


def test_the_lookup_takes_the_nearest_timestep_and_the_table_is_a_hashable_knob() -> None:
    table = ((999.0, 1.0, 0.1), (500.0, 2.0, 0.2), (1.0, 3.0, 0.3))
    assert nearest_row(table, 760.0) == table[0] and nearest_row(table, 740.0) == table[1]
    assert nearest_row(table, -5.0) == table[2] and nearest_row(table, 2000.0) == table[0]
    config = policy_config("sencache", table=[[999, 1.0, 0.1], [500, 2.0, 0.2]])
    assert config.table == table[:2] and hash(config) == hash(SenCacheConfig(table=table[:2]))
    assert not config.needs_calibration and policy_config("sencache").needs_calibration


def digits_setup() -> tuple[Any, Any, list[str], GenerationSettings]:
    spec = get_model("digits")
    prompts = [f"a handwritten digit {d}" for d in range(10)]
    return load_pipeline(spec), spec, prompts, GenerationSettings.for_model(spec, steps=STEPS)


def test_without_a_table_the_gate_is_a_one_line_error_naming_the_fix() -> None:
    message = "sencache has no sensitivity table: run `ecad-search calibrate sencache --model M`"
    with pytest.raises(PolicyError) as error:
        policy_config("sencache").gate()
    assert str(error.value) == message
    pipe, spec, prompts, settings = digits_setup()
    uncached, _ = generate(pipe, spec, prompts, settings, output_type="pt")
    with apply_policy(pipe, policy_config("sencache")), pytest.raises(PolicyError, match="calibrate sencache"):
        generate(pipe, spec, prompts, settings, output_type="pt")
    assert torch.equal(generate(pipe, spec, prompts, settings, output_type="pt")[0], uncached)


def check_table(pipe: Any, table: list[list[float]], scale: float) -> None:
    """One row per step at the timesteps the transformer got (the scheduler's, times `scale`), with positive,
    finite sensitivities, and the transformer left without hooks."""
    assert [row[0] for row in table] == pytest.approx([float(t) * scale for t in pipe.scheduler.timesteps])
    assert all(len(row) == 3 and all(math.isfinite(v) for v in row) and row[1] > 0 and row[2] > 0 for row in table)
    assert not pipe.transformer._forward_hooks, "calibration removes its recorder"


def test_calibration_gives_one_row_per_step_on_digits_tiny_pixart_and_tiny_flux(tiny_pixart_dir, tiny_flux_dir):  # type: ignore[no-untyped-def]
    pipe, spec, prompts, settings = digits_setup()
    table = calibrate_on(pipe, spec, prompts, settings)["table"]
    assert len(table) == STEPS and calibrate_on(pipe, spec, prompts, settings)["table"] == table, "deterministic"
    check_table(pipe, table, 1.0)
    assert table[0][0] == 999 and table[-1][2] > table[0][2], "the output moves faster with t near the end"
    for folder, resolution, scale in ((tiny_pixart_dir, None, 1.0), (tiny_flux_dir, 32, 1 / 1000)):
        spec = get_model(str(folder))
        pipe = load_pipeline(spec)
        settings = GenerationSettings.for_model(spec, steps=STEPS, resolution=resolution)
        table = calibrate_on(pipe, spec, ["a red cat", "a blue house"], settings)["table"]
        assert len(table) == STEPS
        check_table(pipe, table, scale)  # FLUX's transformer gets t/1000


# Per model: ε and K that reuse some of 8 steps with the model's own calibrated table.
CACHING = {"digits": {"eps_start": 0.1, "eps_main": 1.0, "max_skips": 3},
           "tiny-pixart": {"eps_start": 0.05, "eps_main": 0.3, "max_skips": 3}}  # fmt: skip


@pytest.mark.parametrize("model", list(CACHING))
def test_sencache_runs_end_to_end_with_a_calibrated_table(model, tiny_pixart_dir) -> None:  # type: ignore[no-untyped-def]
    if model == "digits":
        pipe, spec, prompts, settings = digits_setup()
        name = "digits"
    else:
        name = str(tiny_pixart_dir)
        spec, prompts = get_model(name), ["a red cat", "a blue house"]
        pipe, settings = load_pipeline(spec), GenerationSettings.for_model(spec, steps=STEPS)
    table = calibrate_on(pipe, spec, prompts, settings)["table"]
    uncached, _ = generate(pipe, spec, prompts, settings, output_type="pt")
    with apply_policy(pipe, policy_config("sencache", eps_start=0, eps_main=0, table=table)) as exact:
        assert torch.equal(generate(pipe, spec, prompts, settings, output_type="pt")[0], uncached), "bit for bit"
    assert exact.decisions == [[True] * STEPS]
    config = policy_config("sencache", table=table, **CACHING[model])
    with apply_policy(pipe, config) as handle:
        first, _ = generate(pipe, spec, prompts, settings, output_type="pt")
        second, _ = generate(pipe, spec, prompts, settings, output_type="pt")
    assert torch.equal(first, second) and handle.decisions[0] == handle.decisions[1], "repeated calls agree"
    ran = handle.decisions[0]
    assert ran[0] and ran[-1] and not all(ran) and not torch.equal(first, uncached), "some steps reused"
    assert torch.equal(generate(pipe, spec, prompts, settings, output_type="pt")[0], uncached), "restored"
    evaluation = EvaluationSettings(name, "fidelity", ("x",), 1, STEPS, settings.guidance_scale, settings.height)
    realised = handle.realised_schedule(run_template(spec, evaluation))
    mask = np.concatenate([m.reshape(STEPS, -1) for m in realised.masks.values()], axis=1)
    assert [bool(mask[s].all()) for s in range(STEPS)] == ran and not mask[[not r for r in ran]].any()
    # The drift (3 per latent element) every step, the table lookup on every computed step.
    latent = 2 * len(prompts) * spec.transformer_config["in_channels"] * spec.transformer_config["sample_size"] ** 2
    assert handle.runs[0].overhead_macs == 3 * latent * STEPS + len(table) * sum(ran)
