"""`ecad-search grid` and `ecad-search policies` as a person sees them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.policies import policy_config, policy_names

runner = CliRunner()


def test_policies_lists_every_policy_with_its_default_knobs() -> None:
    result = runner.invoke(app, ["policies"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│") and not line.startswith("│ name")]
    named = [row.split("│")[1].strip() for row in rows if row.split("│")[1].strip()]
    assert named == list(policy_names()) and len(named) == 9
    assert "threshold=0.05" in result.output, "First-Block Cache at diffusers' default"
    assert f"interval={policy_config('fora').interval}" in result.output


def test_grid_draws_the_ten_digits_with_and_without_a_schedule(tmp_path: Path) -> None:
    grids = {}
    for name, extra in (("plain", []), ("fora", ["--schedule", "digits/fora-2"])):
        out = tmp_path / f"{name}.png"
        result = runner.invoke(app, ["grid", "--model", "digits", "--out", str(out), *extra])
        assert result.exit_code == 0 and f"wrote {out}" in result.output, result.output
        grids[name] = np.asarray(Image.open(out), dtype=float)
    plain, cached = grids["plain"], grids["fora"]
    assert plain.shape == cached.shape and plain.shape[1] > 9 * plain.shape[0], "ten digits in a row"
    assert 0 < np.abs(plain - cached).mean() < 40, "FORA-2 changes the digits, a little"


def test_grid_refuses_a_model_that_draws_no_digits(tmp_path: Path) -> None:
    result = runner.invoke(app, ["grid", "--model", "pixart-alpha", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 2 and "grid draws the ten digits of a digits model" in result.output
    assert not (tmp_path / "g.png").exists()
