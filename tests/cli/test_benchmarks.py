"""Every benchmark runs, as `python -m benchmarks.NAME`, on its smallest setting, and writes its figures. The
figures of a smoke run mean nothing; that they are there, whole, and of the right shape is what is checked.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ecad_search.cli import app

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(path.stem for path in (ROOT / "benchmarks").glob("*.py") if path.stem not in ("__init__", "common"))
# One image per prompt, few steps, one seed: each bench's smallest setting. OUT is the test's folder.
SMALLEST = {
    "budget": "--budgets 0.5 --moves 1 --baseline-moves 1 --metric fidelity --images-per-prompt 1 "
    "--held-out-images-per-prompt 1 --out OUT/budget.json",
    "compile": "--models digits --repeats 1 --out OUT/compile.json",
    "construct": "--models digits --metric fidelity --steps 4 --repeats 1 --score --held-out-images 1 "
    "--out OUT/construct.json",
    "frechet_noise": "--per-digit 4 --sizes 2 --steps-schedules 1 --mask-schedules 1 --out OUT/noise.json "
    "--plot OUT/noise.png",
    "frechet_estimators": "--per-digit 4 --size 2 --components 2 --steps-schedules 1 --mask-schedules 1 "
    "--out OUT/estimators.json",
    "proxies": "--per-digit 1 --truth OUT/noise.json --out OUT/proxies.json",
    "frechet": "--front OUT/runs/frechet/front --per-digit 2 --out OUT/frechet.json",
    "heldout": "--model digits --prompts 2 --seeds 2 --neighbours 1 --out OUT/heldout",
    "policies": "--seeds 1 --out OUT/policies",
    "retime": "--steps 4 --held-out-images 2 --out OUT/retime.json",
    "runtime": "--steps 4 --repeats 1 --out OUT/runtime.json",
    "workers": "--candidates 2 --workers 1 --out OUT/workers.json",
    "prefix": "--generations 1 --seeds 0 --metric fidelity --steps 4 --preset fast --images-per-prompt 1 "
    "--held-out-images-per-prompt 1 --out OUT/prefix.json",
    "search": "--settings fast --reference fast --reference-images 100 --images 100 --seeds 0 --checkpoints 1 "
    "--metric fidelity --steps 4 --images-per-prompt 1 --held-out-images-per-prompt 1 --out OUT/search",
}
# What each writes, and a key its figures must hold.
WRITES = {
    "budget": ("budget.json", "held_out_loss"),
    "compile": ("compile.json", "rows"),
    "construct": ("construct.json", "construction_s"),
    "frechet_noise": ("noise.json", "rows"),
    "frechet_estimators": ("estimators.json", "spearman"),
    "proxies": ("proxies.json", "rows"),
    "frechet": ("frechet.json", "rows"),
    "heldout": ("heldout.json", "candidates"),
    "policies": ("policies.json", "policies"),
    "retime": ("retime.json", "psnr_vs_rival_db"),
    "runtime": ("runtime.json", "schedules"),
    "workers": ("workers.json", "runs"),
    "prefix": ("prefix.json", "runs"),
    "search": ("search.json", "progress"),
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benches' folder, with what some of them read: a small Fréchet search's front (`frechet`)."""
    folder = tmp_path_factory.mktemp("benchmarks")
    args = ["--model", "digits", "--generations", "1", "--population", "4", "--images-per-prompt", "2",
            "--held-out-images-per-prompt", "2", "--run", "frechet", "--prefix-memory", "0",
            "--db", f"sqlite:///{folder / 'frechet.db'}", "--out", str(folder / "runs")]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    return folder


def bench(name: str, out: Path) -> subprocess.CompletedProcess[str]:
    args = SMALLEST[name].replace("OUT", str(out)).split()
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip


def figures(out: Path, name: str) -> Any:
    file, key = WRITES[name]
    data = json.loads((out / file).read_text())
    rows = data if isinstance(data, list) else [data]
    assert rows and all(key in row for row in rows), (name, key)
    return data


def test_every_bench_has_a_smallest_setting_and_a_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(SMALLEST) == BENCHMARKS
    for name in BENCHMARKS:
        with pytest.raises(SystemExit) as stopped:
            importlib.import_module(f"benchmarks.{name}").main(["--help"])
        usage = capsys.readouterr().out
        assert stopped.value.code == 0 and "usage:" in usage and len(usage.splitlines()) > 5, name


# In the order that feeds each its inputs: proxies reads what frechet_noise wrote.
ORDER = ["frechet_noise", *(name for name in SMALLEST if name != "frechet_noise")]


@pytest.mark.parametrize("name", ORDER)
def test_the_bench_runs_on_its_smallest_setting(name: str, out: Path) -> None:
    if name == "workers":
        pytest.importorskip("ray")
    result = bench(name, out)
    assert result.returncode == 0, result.stderr[-3000:]
    data = figures(out, name)
    if name == "budget":
        assert {row["mask"] for row in data} == {"components (ours)", "whole steps (BudCache-style)"}
        assert all(row["macs_fraction"] <= 0.5 * 1.0001 for row in data), "each search kept to its budget"
