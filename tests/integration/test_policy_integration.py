"""Policies in the rest of the program: the evaluator scores a policy at the MACs of what it ran (counted
independently here, by the component forwards that actually executed), calibration tables are measured once
and reused, and a policy and its knobs travel as a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.evaluation import EvaluationSettings, Evaluator, schedule_macs
from ecad_search.formats import load_schedule
from ecad_search.formats.policy import load_policy, save_policy
from ecad_search.generation import GenerationSettings, generate, load_pipeline
from ecad_search.models import block_groups, get_model
from ecad_search.policies import PolicyError, apply_policy, policy_config, policy_names
from ecad_search.policies.calibration import calibrate, calibrated
from ecad_search.schedule import CacheSchedule, ScheduleError

STEPS = 8


def first_linear(component: nn.Module) -> nn.Module:
    return next(module for module in component.modules() if isinstance(module, nn.Linear))


@pytest.fixture(scope="module")
def digits_evaluator() -> Evaluator:
    spec = get_model("digits")
    settings = EvaluationSettings("digits", "fidelity", ("3", "8"), 2, STEPS, spec.guidance_scale, spec.resolution)
    return Evaluator(spec, settings)


@pytest.mark.parametrize("name", list(policy_names()))
def test_the_evaluator_scores_a_policy_at_the_macs_of_the_forwards_it_ran(digits_evaluator, name) -> None:  # type: ignore[no-untyped-def]
    evaluator = digits_evaluator
    spec, settings = evaluator.spec, evaluator.settings
    config = evaluator.calibrated(policy_config(name))
    # A component's first linear layer runs only when the component computes (a reused or forecast component
    # is still called, but returns without running its layers).
    calls = []
    blocks = evaluator.pipe.transformer.transformer_blocks
    handles = [
        first_linear(getattr(block, component)).register_forward_hook(lambda *_, key=(b, c): calls.append(key))
        for b, block in enumerate(blocks)
        for c, component in enumerate(("attn1", "attn2", "ff"))
    ]
    try:
        images, _, macs, realised = evaluator.generate_with_policy(config)
    finally:
        for handle in handles:
            handle.remove()
    masks = [mask.mask("transformer_blocks") for mask in realised]
    assert len(calls) == sum(int(m.sum()) for m in masks), "every computed component ran, and no other"
    assert len(masks) == 1 and images.shape[0] == 4, "one pipeline call: one run, 2 prompts × 2 seeds"
    forwards = schedule_macs(realised[0], spec, settings)
    assert forwards <= macs <= forwards * 1.01, "the forwards it ran plus its own small arithmetic"
    evaluation = evaluator.evaluate(config)
    assert evaluation.macs == pytest.approx(macs, rel=1e-12) and evaluation.cost == macs / evaluator.full_macs
    plain = evaluator.evaluate(evaluator.template)
    assert plain.macs == evaluator.full_macs and plain.quality_loss == pytest.approx(0.0, abs=1e-12), (
        "the evaluator's own hooks are back after the policy"
    )


def test_calibration_is_measured_once_then_reused(tmp_path: Path) -> None:
    spec = get_model("digits")
    pipe = load_pipeline(spec)
    settings = GenerationSettings.for_model(spec, steps=STEPS)
    first = calibrate("teacache", pipe, spec, settings, folder=tmp_path, prompts=["one", "two"])
    again = calibrate("teacache", pipe, spec, settings, folder=tmp_path, prompts=["one", "two"])
    assert first.measured and not again.measured and again.knobs == first.knobs and again.path == first.path
    stored = json.loads(first.path.read_text())
    assert stored["key"]["steps"] == STEPS and len(stored["knobs"]["coefficients"]) == 5
    other = calibrate("teacache", pipe, spec, GenerationSettings.for_model(spec, steps=6), folder=tmp_path)
    assert other.measured and other.path != first.path, "another step count is another calibration"
    with pytest.raises(PolicyError, match="policy 'spectrum' needs no calibration"):
        calibrate("spectrum", pipe, spec, settings, folder=tmp_path)


@pytest.mark.parametrize(("policy", "model"), [("teacache", "digits"), ("magcache", "tiny"), ("sencache", "tiny")])
def test_the_calibrate_command_writes_json_and_reuses_it(tmp_path: Path, tiny_pixart_dir: Path, policy, model) -> None:  # type: ignore[no-untyped-def]
    model = str(tiny_pixart_dir) if model == "tiny" else model
    args = ["calibrate", policy, "--model", model, "--steps", str(STEPS), "--out", str(tmp_path)]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "measured" in first.output, first.output
    assert second.exit_code == 0 and "reused" in second.output, second.output
    (stored,) = tmp_path.glob(f"{policy}-*-{STEPS}steps-*.json")
    knobs = json.loads(stored.read_text())["knobs"]
    assert policy_config(policy, **knobs).needs_calibration is False
    wrong = CliRunner().invoke(app, ["calibrate", "spectrum", "--model", "digits"])
    assert wrong.exit_code == 2 and "calibrate one of magcache, sencache, teacache" in wrong.output.replace("\n", " ")


def test_a_policy_file_round_trips_and_drives_generate(tmp_path: Path) -> None:
    config = policy_config("teacache", threshold=0.3, coefficients=[1.0, 0.0])
    path = save_policy(config, tmp_path / "tea.json")
    assert load_policy(path) == config and isinstance(load_policy(path).coefficients, tuple)
    out = tmp_path / "7.png"
    result = CliRunner().invoke(app, ["generate", "--model", "digits", "--prompt", "7", "--policy", str(path),
                                      "--set", "threshold=0.0", "--out", str(out), "--save-policy",
                                      str(tmp_path / "again.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "teacache: computed 20 of 20 steps" in result.output
    assert load_policy(tmp_path / "again.json") == policy_config("teacache", threshold=0.0, coefficients=[1.0, 0.0])
    with pytest.raises(ScheduleError, match="names an online policy, not a schedule"):
        load_schedule(path)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "ecad-search.policy", "version": 9}))
    with pytest.raises(PolicyError, match="policy format version 9"):
        load_policy(tmp_path / "bad.json")


@pytest.mark.parametrize("name", list(policy_names()))
@pytest.mark.parametrize("model", ["tiny_pixart_dir", "tiny_flux_dir"])
def test_every_policy_runs_at_its_defaults_on_the_tiny_models(request, tmp_path, name, model) -> None:  # type: ignore[no-untyped-def]
    """Calibrated first where it needs a table, each policy runs one decision per step on the tiny PixArt-α and
    FLUX pipelines, its realised mask is what it decided, and the pipeline is restored exactly."""
    spec = get_model(request.getfixturevalue(model))
    pipe = load_pipeline(spec)
    settings = GenerationSettings.for_model(spec, steps=STEPS, resolution=32)
    uncached, _ = generate(pipe, spec, ["a red cat"], settings, output_type="pt")
    config = calibrated(policy_config(name), pipe, spec, settings, folder=tmp_path)
    with apply_policy(pipe, config) as handle:
        generate(pipe, spec, ["a red cat"], settings, output_type="pt")
    (run,) = handle.runs
    assert len(run.decisions) == STEPS and run.decisions[0], "one decision per step, the first computes"
    template = CacheSchedule.all_compute(block_groups(spec), STEPS)
    realised = handle.realised_schedule(template)
    last_block = realised.mask(realised.groups[-1].name)[:, -1]
    assert [bool(last_block[step].any()) for step in range(STEPS)] == run.decisions, "the last block ran iff decided"
    assert torch.equal(generate(pipe, spec, ["a red cat"], settings, output_type="pt")[0], uncached), "restored"
