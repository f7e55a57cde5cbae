"""Policies in the rest of the program: the evaluator scores a policy at the MACs of what it ran (counted
independently here, by the component forwards that actually executed), calibration tables are measured once
and reused, and a policy and its knobs travel as a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecad_search.calibration import calibrate
from ecad_search.cli import app
from ecad_search.evaluation import EvaluationSettings, Evaluator, schedule_macs
from ecad_search.formats import load_schedule
from ecad_search.formats.policy import load_policy, save_policy
from ecad_search.generation import GenerationSettings, load_pipeline
from ecad_search.models import get_model
from ecad_search.runtime.policy import PolicyError, policy_config
from ecad_search.schedule import ScheduleError

STEPS = 8


def test_the_evaluator_scores_a_policy_at_the_macs_of_the_forwards_it_ran() -> None:
    spec = get_model("digits")
    settings = EvaluationSettings("digits", "fidelity", ("3", "8"), 2, STEPS, spec.guidance_scale, spec.resolution)
    evaluator = Evaluator(spec, settings)
    calls = []
    blocks = evaluator.pipe.transformer.transformer_blocks
    handles = [
        getattr(block, name).register_forward_hook(lambda *_, key=(b, c): calls.append(key))
        for b, block in enumerate(blocks)
        for c, name in enumerate(("attn1", "attn2", "ff"))
    ]
    config = policy_config("first-block-cache", threshold=0.2)
    images, _, macs, realised = evaluator.generate_with_policy(config)
    for handle in handles:
        handle.remove()
    masks = [mask.mask("transformer_blocks") for mask in realised]
    assert len(calls) == sum(int(m.sum()) for m in masks), "every computed component ran, and no other"
    assert all(m[:, 0].all() for m in masks) and not all(m.all() for m in masks), "block 0 always, others not"
    evaluation = evaluator.evaluate(config)
    forwards = np.mean([schedule_macs(m, spec, settings) for m in realised])
    assert forwards < evaluation.macs < forwards * 1.01, "the forwards it ran plus its own small arithmetic"
    assert evaluation.macs == pytest.approx(macs, rel=1e-12) and evaluation.cost == macs / evaluator.full_macs
    exact = evaluator.evaluate(policy_config("first-block-cache", threshold=0.0))
    assert exact.quality_loss == pytest.approx(evaluator.evaluate(evaluator.template).quality_loss, abs=1e-12)
    assert images.shape[0] == 4


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


def test_the_calibrate_command_writes_json_and_reuses_it(tmp_path: Path) -> None:
    args = ["calibrate", "teacache", "--model", "digits", "--steps", str(STEPS), "--out", str(tmp_path)]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "measured" in first.output, first.output
    assert second.exit_code == 0 and "reused" in second.output, second.output
    assert len(list(tmp_path.glob("teacache-digits-8steps-*.json"))) == 1
    wrong = CliRunner().invoke(app, ["calibrate", "spectrum", "--model", "digits"])
    assert wrong.exit_code == 2 and "calibrate one of" in wrong.output


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
