"""`ecad-search compare`: the budget logic on hand-made curves, the held-out split, the reference figures, and
the command end to end on digits and tiny PixArt-α (report, CSV and plot written; a second run evaluates
nothing)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure
from typer.testing import CliRunner

from ecad_search.app.compare import prepare_compare
from ecad_search.app.requests import CompareRequest
from ecad_search.cli import app
from ecad_search.compare.budgets import (
    Point,
    at_budgets,
    best_at,
    hypervolume,
    pareto,
    reference_point,
)
from ecad_search.errors import FieldError
from ecad_search.formats import save_schedule
from ecad_search.metrics.fidelity import ssim
from ecad_search.models import block_groups, get_model
from ecad_search.prompts import BUNDLED, load_prompts
from ecad_search.schedule import CacheSchedule
from ecad_search.store import Store

runner = CliRunner()


def point(method: str, cost: float, loss: float, scores: tuple[float, ...] = ()) -> Point:
    return Point(method, f"{method}@{cost}", f"{method}-{cost}", cost, loss, scores)


CURVES = {
    "learned": [point("learned", 0.48, 0.10, (0.9, 0.9, 0.9)), point("learned", 0.30, 0.25, (0.8, 0.6, 0.75))],
    "fora": [point("fora", 0.5015, 0.20, (0.8, 0.8, 0.8)), point("fora", 0.3519, 0.30, (0.7, 0.7, 0.7))],
    "teacache": [point("teacache", 0.7, 0.05), point("teacache", 0.45, 0.40)],
}


def test_the_best_point_of_a_method_is_the_lowest_loss_within_the_budget() -> None:
    assert best_at(CURVES["learned"], 0.5).loss == 0.10
    assert best_at(CURVES["learned"], 0.35).loss == 0.25
    assert best_at(CURVES["learned"], 0.2) is None, "nothing this cheap"
    assert best_at(CURVES["fora"], 0.5).cost == 0.5015, "FORA-2 counts at 50 % (1 % slack for step 0)"
    assert best_at(CURVES["fora"], 0.49).cost == 0.3519, "just under FORA-2: FORA-3 is the best"


def test_winners_at_each_budget_and_their_runners_up() -> None:
    fifty, thirty_five, twenty = at_budgets(CURVES, [0.5, 0.35, 0.2])
    assert fifty.winner is CURVES["learned"][0] and fifty.runner_up is CURVES["fora"][0]
    assert fifty.best["teacache"] is CURVES["teacache"][1], "teacache's best under 50 % is its 45 % point"
    assert thirty_five.winner is CURVES["learned"][1] and thirty_five.best["teacache"] is None
    assert thirty_five.runner_up is CURVES["fora"][1]
    assert twenty.winner is None and twenty.runner_up is None
    alone = at_budgets({"learned": CURVES["learned"], "teacache": CURVES["teacache"]}, [0.3])[0]
    assert alone.winner is CURVES["learned"][1] and alone.runner_up is None


def test_pareto_and_hypervolume_on_hand_made_points() -> None:
    points = [point("x", 0.2, 0.5), point("x", 0.5, 0.2), point("x", 0.6, 0.3), point("x", 1.0, 0.0)]
    assert [p.cost for p in pareto(points)] == [0.2, 0.5, 1.0]
    # Up to (1, 1): [0.2, 0.5) × [0.5, 1] + [0.5, 1) × [0.2, 1] = 0.15 + 0.4.
    assert hypervolume(points, (1.0, 1.0)) == pytest.approx(0.55)
    assert reference_point({"x": points}) == (1.0, pytest.approx(0.55))
    assert hypervolume([point("x", 0.5, 2.0)], (1.0, 1.0)) == 0.0


def test_held_out_prompts_are_disjoint_from_calibration_prompts() -> None:
    calibration, held_out = load_prompts(BUNDLED / "general.txt"), load_prompts(BUNDLED / "general-heldout.txt")
    assert len(held_out) >= 50 and not set(calibration) & set(held_out)
    prepared = prepare_compare(CompareRequest(model="digits", methods=("fora",), out="/tmp/never-written"))
    assert prepared.held_out.seed == 1_000_000 and prepared.held_out.reference_figures
    assert not Path("/tmp/never-written").exists(), "preparing writes nothing"


def test_torchmetrics_ssim_agrees_with_ours_where_the_windows_match() -> None:
    generator = torch.Generator().manual_seed(0)
    for size, tolerance in ((64, 1e-3), (256, 2e-4)):
        a = torch.rand(4, 3, size, size, generator=generator, dtype=torch.float64)
        b = (a + 0.1 * torch.randn(a.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
        theirs = structural_similarity_index_measure(b, a, data_range=1.0, reduction="none")
        assert (ssim(b, a, window_size=11).double() - theirs).abs().max() < tolerance
    digits = torch.rand(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    noisy = (digits + 0.1 * torch.randn(digits.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    theirs = structural_similarity_index_measure(noisy, digits, data_range=1.0, reduction="none")
    assert 1e-3 < (ssim(noisy, digits).double() - theirs).abs().max() < 0.03, "8×8: 7×7 valid vs 11×11 reflected"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "fora,magic"], "unknown method 'magic'"),
        (["--budgets", "0.5,1.5"], "--budgets: 1.5 is not a fraction"),
        (["--budgets", "half"], "give fractions separated by commas"),
        (["--run", "nope"], "no run named 'nope'"),
        (["--methods", "learned"], "the learned method needs --run or --schedule"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    db = tmp_path / "c.db"
    if "--run" in args:
        Store(f"sqlite:///{db}").close()
    result = runner.invoke(
        app, ["compare", "--model", "digits", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def compare(tmp_path: Path, *extra: str) -> tuple[str, Path]:
    args = ["compare", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--out", str(tmp_path / "out"), "--grid", "2",
            "--images-per-prompt", "2", "--timing-repeats", "1", *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "out").iterdir()
    return result.output, folder


def test_compare_on_digits_end_to_end_and_resumed(tmp_path: Path) -> None:
    spec = get_model("digits")
    template = CacheSchedule.all_compute(block_groups(spec), spec.default_steps)
    genome = np.random.default_rng(0).random(template.genome_length) < 0.4
    mine = save_schedule(template.with_genome(genome, name="mine"), tmp_path / "mine.json")
    methods = "learned,fora,fewer-steps,teacache"
    first, folder = compare(tmp_path, "--model", "digits", "--methods", methods, "--schedule", str(mine))
    assert "compare: 4 methods, 30 settings, 31 evaluated now" in first, first
    assert "lowest loss at each budget (claim over the runner-up): 50%: " in first
    rows = list(csv.DictReader((folder / "points.csv").open()))
    assert [r["method"] for r in rows].count("fora") == 9 and [r["method"] for r in rows].count("teacache") == 2
    fewer = {r["setting"]: float(r["macs_fraction"]) for r in rows if r["method"] == "fewer-steps"}
    assert fewer == {f"{k} steps": pytest.approx(k / 20) for k in range(2, 20)}, "k of 20 steps costs k/20"
    uncached = rows[0]
    assert uncached["method"] == "uncached" and float(uncached["macs_fraction"]) == 1.0
    assert float(uncached["psnr_db"]) == 100.0 and float(uncached["ssim"]) == pytest.approx(1.0)
    report = (folder / "report.md").read_text()
    assert "### At 50% of the uncached MACs" in report and "| learned | mine |" in report
    assert "| fewer-steps | " in report and "Margins: quality 1 FD, fidelity 1 dB PSNR, adherence 0.5 points." in report
    versus = report[report.index("## Our schedules against every method") :].split("\n\n")[3].splitlines()
    assert len(versus) == 2 + 3, "at 50 % (its only budget), mine against fora, fewer-steps and teacache"
    words = ("better", "trade-off", "tie", "worse")
    assert all(row.split(" | ")[-2] in words for row in versus[2:]), versus
    ceilings = [row.split(" | ")[-1].strip(" |") for row in versus[2:]]
    assert set(ceilings) <= {"better", "trade-off"}, "the uncached model, 100 dB: never tied or behind in fidelity"
    assert all(" dB [" in row and "[" in row.split(" | ")[5] for row in versus[2:]), "every family, with intervals"
    assert (folder / "pareto.png").stat().st_size > 10_000
    again, _ = compare(tmp_path, "--model", "digits", "--methods", methods, "--schedule", str(mine))
    assert "31 evaluated now" not in again and "30 settings, 0 evaluated now" in again, "resumed from the memo"
    assert list(csv.DictReader((folder / "points.csv").open())) == rows


def test_compare_on_tiny_pixart_with_a_several_knob_policy(tmp_path: Path, tiny_pixart_dir: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\na green house\n")
    output, folder = compare(tmp_path, "--model", str(tiny_pixart_dir), "--metric", "fidelity", "--prompts",
                             str(prompts), "--methods", "first-block-cache,magcache", "--trials", "3")  # fmt: skip
    assert "compare: 2 methods, 5 settings" in output, output
    assert (folder / "optuna.db").is_file(), "the several-knob policy's study is kept for resuming"
    rows = list(csv.DictReader((folder / "points.csv").open()))
    assert {r["method"] for r in rows} == {"uncached", "first-block-cache", "magcache"}
    assert all(0 < float(r["macs_fraction"]) < 1.01 for r in rows), "a policy computing every step pays its overhead"
    again, _ = compare(tmp_path, "--model", str(tiny_pixart_dir), "--metric", "fidelity", "--prompts", str(prompts),
                       "--methods", "first-block-cache,magcache", "--trials", "3")  # fmt: skip
    assert "compare: 2 methods, 5 settings, 0 evaluated now" in again, "the study's trials come back from the memo"
    with pytest.raises(FieldError, match="unknown method"):
        prepare_compare(CompareRequest(model="digits", methods=("nope",)))
