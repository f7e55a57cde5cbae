"""The package as pip builds it: every subpackage listed, the calibration prompts shipped inside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.prompts import BUNDLED, default_prompt_file, held_out_prompt_file, load_prompts

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "ecad_search").rglob("__init__.py")}
    listed = set(setuptools_config()["packages"])
    assert listed - found == {"ecad_search.calibration_prompts"}
    assert found <= listed


def test_calibration_prompts_ship_inside_the_package() -> None:
    config = setuptools_config()
    folder = ROOT / config["package-dir"]["ecad_search.calibration_prompts"]
    assert folder.resolve() == BUNDLED
    for family in ("digits", "pixart"):
        path = default_prompt_file(family)
        assert path.parent == folder.resolve() and path.suffix == ".txt"
    assert len(load_prompts(default_prompt_file("pixart"))) == 100
    assert len(load_prompts(default_prompt_file("digits"))) == 10
    held_out = held_out_prompt_file(default_prompt_file("pixart"))
    assert held_out is not None and held_out.parent == folder.resolve()
    assert len(load_prompts(held_out)) == 50
    assert not set(load_prompts(held_out)) & set(load_prompts(default_prompt_file("pixart")))
    assert held_out_prompt_file(default_prompt_file("digits")) is None
    assert "*.txt" in config["package-data"]["ecad_search.calibration_prompts"]


def test_shipped_schedules_are_package_data_loadable_by_name() -> None:
    from ecad_search import load_schedule
    from ecad_search.formats import SHIPPED, shipped_schedules

    config = setuptools_config()
    assert "schedules/*/*.json" in config["package-data"]["ecad_search"]
    names = shipped_schedules()
    assert {"digits/fora-2", "digits/refined-35", "pixart-alpha/fora-3", "flux-dev/fora-2"} <= set(names)
    assert len(names) == 13
    assert SHIPPED.parent == ROOT / "ecad_search"
    schedule = load_schedule("pixart-alpha/fora-3")
    assert (schedule.name, schedule.num_steps) == ("fora-3", 20)
    assert schedule.digest() == load_schedule(SHIPPED / "pixart-alpha" / "fora-3.json").digest()
    refined = load_schedule("digits/refined-35")
    assert refined.fill == "taylor1" and refined.provenance["strategy"] == "refine"
    listed = CliRunner().invoke(app, ["schedules"], env={"COLUMNS": "100"})
    assert listed.exit_code == 0 and all(name in listed.output for name in names)
