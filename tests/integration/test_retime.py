"""`convert --steps`: a schedule carried to another step count by where its steps sit in the noise schedule,
with the mapping in its provenance; what cannot map is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.formats import load_schedule, save_schedule
from ecad_search.models import get_family, get_model, local_spec
from ecad_search.retime import retime, step_map
from ecad_search.runtime import apply_schedule
from ecad_search.schedule import ScheduleError
from ecad_search.testing import TINY_FLUX_CALL_KWARGS, TINY_PIXART_CALL_KWARGS

runner = CliRunner()


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_each_new_step_follows_the_old_step_nearest_in_noise() -> None:
    assert step_map([900, 600, 300, 0], [900, 600, 300, 0]) == [0, 1, 2, 3]
    assert step_map([900, 600, 300, 0], [900, 800, 700, 450, 100]) == [0, 0, 1, 1, 3], "450: the earlier on a tie"
    assert step_map([0.0, 0.5, 1.0], [0.0, 0.2, 0.9]) == [0, 0, 2], "either direction"
    with pytest.raises(ScheduleError, match="outside the schedule's"):
        step_map([900, 600, 300, 0], [900, 2000])
    with pytest.raises(ScheduleError, match="strictly in one direction"):
        step_map([900, 900, 0], [900, 0])


def test_convert_steps_maps_by_the_scheduler_and_keeps_its_provenance(tmp_path: Path) -> None:
    out = tmp_path / "fora3-28.json"
    result = invoke("convert", "digits/fora-3", out, "--steps", 28)
    assert result.exit_code == 0, result.output
    source, carried = load_schedule("digits/fora-3"), load_schedule(out)
    retimed = carried.provenance["retimed"]
    assert retimed["source"] == source.digest() and retimed["from_steps"] == 20 and retimed["to_steps"] == 28
    assert retimed["by"] == "timesteps of DPMSolverMultistepScheduler"
    family, spec = get_family("digits"), get_model("digits")
    scheduler = family.load_scheduler(spec)
    old, new = family.noise_positions(spec, scheduler, 20), family.noise_positions(spec, scheduler, 28)
    assert retimed["source_steps"] == step_map(old, new)
    for j, i in enumerate(retimed["source_steps"]):
        assert np.array_equal(carried.mask("transformer_blocks")[j], source.mask("transformer_blocks")[i])
    assert carried.num_steps == 28 and carried.name == "fora-3@28"
    assert abs(carried.compute_fraction - source.compute_fraction) < 0.05, "the share of computes carries over"
    assert carried.metrics["macs"]["value"] < source.metrics["macs"]["value"] * 28 / 20, "MACs counted anew"
    again = tmp_path / "again.json"
    save_schedule(carried, again)
    assert json.loads(again.read_text())["provenance"]["retimed"] == retimed, "provenance round-trips"


def test_a_carried_schedule_runs_at_its_new_step_count(tmp_path: Path) -> None:
    out = tmp_path / "fora2-10.json"
    assert invoke("convert", "digits/fora-2", out, "--steps", 10).exit_code == 0
    pipe = get_family("digits").load_pipeline(get_model("digits"))
    with apply_schedule(pipe, load_schedule(out)) as handle:
        images = pipe(["3"], num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.isfinite(images.images).all() and handle.stats.steps_run == 10


@pytest.mark.parametrize("family_dir", ["tiny_pixart_dir", "tiny_flux_dir"])
def test_noise_positions_are_the_timesteps_the_pipeline_runs(request: pytest.FixtureRequest, family_dir: str) -> None:
    """The family sets the scheduler as its pipeline does (FLUX: shifted σ for the image's token count)."""
    folder = request.getfixturevalue(family_dir)
    spec = local_spec(folder)
    family = get_family(spec)
    pipe = family.load_pipeline(spec)
    kwargs = dict(TINY_FLUX_CALL_KWARGS if "flux" in family_dir else TINY_PIXART_CALL_KWARGS)
    kwargs.update(height=spec.resolution, width=spec.resolution)
    for steps in (6, 11):
        pipe("a red cat", num_inference_steps=steps, output_type="pt", **kwargs)
        ran = [float(t) for t in pipe.scheduler.timesteps]
        assert family.noise_positions(spec, family.load_scheduler(spec), steps) == pytest.approx(ran)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("convert", "digits/fora-3", "{tmp}/x.json", "--steps", "1"), "--steps must be a whole number from 2"),
        (("convert", "digits/fora-3", "{tmp}/x.json", "--model", "digits"), "give it with --steps"),
        (("convert", "pixart-alpha/fora-3", "{tmp}/x.json", "--steps", "28", "--model", "digits"), "but digits has"),
        (
            ("convert", "{tmp}/ecad.json", "{tmp}/x.json", "--steps", "28"),
            "cannot read the scheduler of model 'pixart-alpha'",
        ),
        (("convert", "digits/fora-3", "{tmp}/x.json", "--to", "onnx"), "unknown target format 'onnx'"),
    ],
)
def test_what_cannot_map_is_one_line_and_writes_nothing(tmp_path: Path, args: tuple, message: str) -> None:
    steps = {
        f"{s:03d}": {str(b): {"attn1": s % 2 == 0, "attn2": True, "ff": True} for b in range(28)} for s in range(20)
    }
    ecad = {"cache_schedule": {"num_blocks": 28, "num_inference_steps": 20, "schedule": steps}}
    (tmp_path / "ecad.json").write_text(json.dumps(ecad))
    result = invoke(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "x.json").exists()


def test_retime_refuses_a_source_of_the_wrong_length() -> None:
    schedule = load_schedule("digits/fora-3")
    with pytest.raises(ScheduleError, match="20 steps but 3 source noise positions"):
        retime(schedule, [3.0, 2.0, 1.0], [3.0, 1.0], by="test")
