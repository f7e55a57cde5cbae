"""The command line, as a user runs it: outputs, figures, and one-line errors that leave nothing behind."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ecad_search import estimate_macs, load_schedule
from ecad_search.cli import app

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def test_heuristic_then_describe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "fora3.json"
    result = invoke("heuristic", "fora", "--model", "pixart-alpha", "--n", "3", "--out", out)
    assert result.exit_code == 0, result.output
    schedule = load_schedule(out)
    assert schedule.metrics["macs"]["value"] == estimate_macs(schedule)
    result = invoke("describe", out, "--plot", tmp_path / "mask.png")
    assert result.exit_code == 0, result.output
    assert "2.019 TMACs of 5.714 TMACs" in result.output
    assert (tmp_path / "mask.png").stat().st_size > 1000


def test_heuristic_all_writes_a_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = invoke("heuristic", "all", "--model", "flux-dev", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    names = {p.stem for p in tmp_path.glob("*.json")}
    assert {"no-cache", "fora-2", "fora-20", "even-proj_mlp-2"} <= names


def test_convert_ecad_to_ours_and_cache_dit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    steps = {
        f"{s:03d}": {str(b): {"attn1": s % 2 == 0, "attn2": True, "ff": True} for b in range(28)} for s in range(20)
    }
    source = tmp_path / "ecad.json"
    source.write_text(json.dumps({"cache_schedule": {"num_blocks": 28, "num_inference_steps": 20, "schedule": steps}}))
    assert invoke("convert", source, tmp_path / "ours.json").exit_code == 0
    assert load_schedule(tmp_path / "ours.json").mask("transformer_blocks")[1, :, 0].sum() == 0
    result = invoke("convert", source, tmp_path / "cd.json", "--to", "cache-dit", "--threshold", "0.9")
    assert result.exit_code == 0, result.output
    mask = json.loads((tmp_path / "cd.json").read_text())["cache_config"]["steps_computation_mask"]
    assert mask == [1, 0] * 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("describe", "missing.json"), "cannot read schedule file"),
        (("heuristic", "bogus", "--out", "{tmp}/x.json"), "unknown heuristic 'bogus'"),
        (("heuristic", "fora", "--model", "sdxl", "--out", "{tmp}/x.json"), "unknown model 'sdxl'"),
        (("heuristic", "fora", "--n", "0", "--out", "{tmp}/x.json"), "interval must be at least 1"),
        (("convert", "{tmp}/good.json", "{tmp}/x.json", "--to", "onnx"), "unknown target format"),
        (
            ("generate", "--prompt", "a cat", "--model", "pixart-alpha", "--out", "{tmp}/x.png"),
            "model 'pixart-alpha' is not on this machine",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    assert invoke("heuristic", "fora", "--model", "pixart-alpha", "--out", tmp_path / "good.json").exit_code == 0
    result = invoke(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.png").exists()


def test_generate_with_a_schedule_on_a_local_model(tmp_path, tiny_pixart_dir) -> None:  # type: ignore[no-untyped-def]
    schedule = tmp_path / "fora2.json"
    assert invoke("heuristic", "fora", "--model", tiny_pixart_dir, "--steps", 6, "--out", schedule).exit_code == 0
    result = invoke(
        "generate",
        "--model",
        tiny_pixart_dir,
        "--prompt",
        "a red cat",
        "--schedule",
        schedule,
        "--out",
        tmp_path / "cat.png",
        "--compare",
    )
    assert result.exit_code == 0, result.output
    assert "50.0% of MACs saved" not in result.output and "of MACs saved" in result.output
    assert "speedup" in result.output
    from PIL import Image

    assert Image.open(tmp_path / "cat.png").size == (256, 256)
