"""The search end to end on a tiny stock PixArt pipeline: outputs, memo, resume after a real crash, bad options."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecad_search import CacheSchedule, load_schedule
from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.cli import app
from ecad_search.heuristics import fora
from ecad_search.models import block_groups, get_model
from ecad_search.search.baselines import baseline_table, compare_with_baselines, verdict_lines
from ecad_search.search.presets import PRESETS, Preset
from ecad_search.search.racing import MIN_RACE_PROMPTS, runnable_preset
from ecad_search.search.run import SearchRun
from ecad_search.search.seeding import FORA_BASELINES, initial_population
from ecad_search.store import EvaluationRecord, GenerationRecord, Store
from ecad_search.verdict import ClaimRules, Margins, paired_difference

runner = CliRunner()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "p.txt"
    path.write_text("a red cat\na blue house\n")
    return path


def search_args(model: Path, prompts: Path, db: Path, out: Path, generations: int, *extra: str) -> list[str]:
    return [
        "--model", str(model), "--metric", "fidelity", "--generations", str(generations), "--population", "6",
        "--steps", "4", "--prompts", str(prompts), "--db", f"sqlite:///{db}", "--out", str(out), "--run", "t",
        *extra,
    ]  # fmt: skip


def final_archive(db: Path, run: str = "t") -> tuple[str, ...]:
    return Store(f"sqlite:///{db}").generations(run)[-1].archive


def test_short_search_writes_front_plot_and_tables(tmp_path, tiny_pixart_dir, prompts) -> None:  # type: ignore[no-untyped-def]
    db, out = tmp_path / "s.db", tmp_path / "out"
    result = runner.invoke(app, search_args(tiny_pixart_dir, prompts, db, out, 3, "--held-out", "front"))
    assert result.exit_code == 0, result.output
    run_dir = out / "t"
    fronts = sorted((run_dir / "front").glob("*.json"))
    assert fronts and (run_dir / "pareto.png").stat().st_size > 5000
    assert len((run_dir / "front.csv").read_text().splitlines()) == len(fronts) + 1
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 4 and history[0].startswith("generation,hypervolume")
    store = Store(f"sqlite:///{db}")
    info = store.get_run("t")
    assert (info.status, info.generations_done) == ("finished", 3)
    rows = list(csv.DictReader((run_dir / "front.csv").read_text().splitlines()))
    saved = [load_schedule(path).metrics for path in fronts]
    points = np.array([[m["quality_loss"]["value"], m["macs_fraction"]["value"]] for m in saved])
    for p in points:
        dominated = (points <= p).all(axis=1) & (points < p).any(axis=1)
        assert not dominated.any(), "the archive holds only non-dominated schedules (by the search's pooled loss)"
    assert all(r["held_out_loss"] for r in rows), "the final front is scored on held-out images"
    schedule = load_schedule(fronts[0])
    assert schedule.provenance["method"] == "search" and "quality_loss" in schedule.metrics
    assert schedule.metrics["macs_fraction"]["value"] == pytest.approx(min(points[:, 1]))
    assert schedule.metrics["held_out_loss"]["value"] == pytest.approx(float(rows[0]["held_out_loss"]), abs=1e-5)
    assert "never used by the search" in schedule.metrics["held_out_loss"]["definition"]
    splits = prepare(
        SearchRequest(**{**info.config, "generations": 1, "db": f"sqlite:///{db}", "out": str(out)})
    ).splits
    for path in fronts:
        digest = load_schedule(path).digest()
        calibration = store.lookup(splits.calibration.key(), [digest])[digest]
        confirmation = store.lookup(splits.confirmation.key(), [digest])[digest]
        pooled = 1 - np.mean(calibration.scores["prompt_scores"] + confirmation.scores["prompt_scores"])
        assert load_schedule(path).metrics["quality_loss"]["value"] == pytest.approx(pooled), "front losses are pooled"


def test_same_command_resumes_without_paying_twice(tmp_path, tiny_pixart_dir, prompts) -> None:  # type: ignore[no-untyped-def]
    db, out = tmp_path / "s.db", tmp_path / "out"
    first = runner.invoke(app, search_args(tiny_pixart_dir, prompts, db, out, 2))
    assert first.exit_code == 0, first.output
    history = (out / "t" / "history.csv").read_text().splitlines()
    assert history[0] == "generation,hypervolume,evaluated,from_database,duplicates,confirmed,front_size,wall_time_s"
    first_generation = history[1].split(",")
    baselines = [n for n in FORA_BASELINES if n < 4]
    assert first_generation[2:5] == [str(6 - len(baselines)), "0", str(len(baselines))], (
        "a fresh database has nothing to serve; the FORA baselines seeded in the population were just scored"
    )
    fewer_steps = 1  # FORA-2 and FORA-3 compute 2 of the 4 steps: 2 steps is the one fewer-steps baseline
    calibration = int(first_generation[2]) + int(history[2].split(",")[2]) + len(baselines) + fewer_steps
    assert "baselines: 3 FORA and fewer steps (3 scored now, 0 from the database)" in first.output
    assert f"{calibration} new evaluations · 0 from the database · {len(baselines)} duplicates" in first.output
    again = runner.invoke(app, search_args(tiny_pixart_dir, prompts, db, out, 3))
    assert again.exit_code == 0 and "new evaluations" in again.output
    resumed = (out / "t" / "history.csv").read_text().splitlines()
    assert resumed[:3] == history[:3], "history keeps what each generation cost when it first ran"
    assert len(resumed) == 4
    everything = _evaluations(db)
    again = runner.invoke(app, search_args(tiny_pixart_dir, prompts, db, out, 3))
    assert again.exit_code == 0 and "0 new evaluations · 0 from the database" in again.output
    assert _evaluations(db) == everything, "nothing is scored again: calibration, confirmation nor held out"
    assert "held out: 4 images (2 prompts × 2 seeds from 1000000)" in again.output
    other = runner.invoke(app, [*search_args(tiny_pixart_dir, prompts, db, out, 1, "--seed", "5")[:-2], "--run", "u"])
    assert other.exit_code == 0, other.output
    generation = Store(f"sqlite:///{db}").generations("u")[0]
    assert generation.memo_hits > 0, "a second run on the same settings reuses the first run's evaluations"


def test_resume_after_a_crash_gives_the_same_archive(tmp_path, tiny_pixart_dir, prompts) -> None:  # type: ignore[no-untyped-def]
    reference_db = tmp_path / "ref.db"
    args = search_args(tiny_pixart_dir, prompts, reference_db, tmp_path / "ref", 4)
    assert runner.invoke(app, args).exit_code == 0
    crash_db = tmp_path / "crash.db"
    command = [
        sys.executable,
        "-m",
        "ecad_search",
        *search_args(tiny_pixart_dir, prompts, crash_db, tmp_path / "c", 4),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "crashed.log"
    with log.open("w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if crash_db.exists() and _evaluations(crash_db) >= 12:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    crashed_at = _evaluations(crash_db)
    assert crashed_at >= 12, log.read_text()[-2000:]
    resumed = runner.invoke(app, search_args(tiny_pixart_dir, prompts, crash_db, tmp_path / "c", 4))
    assert resumed.exit_code == 0, resumed.output
    assert final_archive(crash_db) == final_archive(reference_db)
    assert _evaluations(crash_db) == _evaluations(reference_db)


def _evaluations(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("select count(*) from ecad_evaluations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--model", "sdxl"), "unknown model 'sdxl'"),
        (("--metric", "beauty"), "unknown metric 'beauty'"),
        (("--generations", "0"), "--generations must be a whole number from 1 to 10000, got 0"),
        (("--steps", "0"), "--steps must be a whole number from 2 to 100"),
        (("--steps", "1"), "--steps must be a whole number from 2 to 100"),
        (("--steps", "1000"), "--steps must be a whole number from 2 to 100"),
        (("--population", "100000"), "--population must be a whole number from 4 to 1000"),
        (("--guidance", "nan"), "--guidance must be a finite number"),
        (("--seed", "-1"), "--seed must be a whole number from 0"),
        (("--images-per-prompt", "0"), "--images-per-prompt must be a whole number from 1"),
        (("--resolution", "7"), "--resolution 7 is not a multiple of 4 px"),
        (("--prompts", "{binary}"), "is not UTF-8 text"),
        (("--out", "{file}"), "is a file, not a folder"),
        (("--out", "{file}/sub"), "is a file, not a folder"),
        (("--out", "{db}"), "is in its way; give another folder"),
        (("--prompts", "/nonexistent/prompts.txt"), "cannot read prompts file"),
        (("--db", "nonsense://"), "database"),
        (("--db", "sqlite:////nonexistent/dir/x.db"), "nonexistent"),
        (("--metric", "reward"), "metric 'reward' scores the digits model only"),
        (("--metric", "frechet"), "metric 'frechet' scores the digits model only"),
        (("--preset", "quick"), "unknown preset 'quick'"),
        (("--guard", "maybe"), "unknown --guard 'maybe': use one of both, confirm, paired, none"),
        (("--held-out", "all"), "unknown --held-out 'all': use one of rivals, front"),
        (("--batch-size", "-1"), "--batch-size must be a whole number from 0"),
        (("--prefix-memory", "-1"), "--prefix-memory must be a whole number from 0 to 1048576 (MiB; 0 shares no"),
        (("--held-out-images-per-prompt", "0"), "--held-out-images-per-prompt must be a whole number from 1"),
        (("--device", "gpu"), "unknown device 'gpu'"),
        (("--objective", "beauty"), "unknown --objective 'beauty': use one of quality, fidelity"),
        (("--adherence-floor", "101"), "--adherence-floor must be from 0 to 100, got 101"),
        (("--adherence-floor", "nan"), "--adherence-floor must be a finite number"),
        (("--margin", "psnr=1"), "unknown --margin family 'psnr': use one of quality, fidelity, adherence"),
        (("--margin", "fidelity=-1"), "--margin fidelity=-1.0 must be a number ≥ 0"),
        (("--margin", "fidelity"), "--margin fidelity: write FAMILY=VALUE, e.g. --margin fidelity=1"),
    ],
)
def test_bad_options_are_one_line_and_leave_the_database_untouched(tmp_path, tiny_pixart_dir, prompts, change, message):  # type: ignore[no-untyped-def]
    db, out = tmp_path / "s.db", tmp_path / "out"
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)))
    (tmp_path / "file").write_text("not a folder")
    value = change[1].format(binary=tmp_path / "binary.txt", file=tmp_path / "file", db=db)
    args = search_args(tiny_pixart_dir, prompts, db, out, 1)
    if change[0] in args:
        args[args.index(change[0]) + 1] = value
    else:
        args += [change[0], value]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not db.exists() and not out.exists()


def test_export_picks_from_the_front(tmp_path, tiny_pixart_dir, prompts) -> None:  # type: ignore[no-untyped-def]
    db, out = tmp_path / "s.db", tmp_path / "out"
    assert runner.invoke(app, search_args(tiny_pixart_dir, prompts, db, out, 2, "--held-out", "front")).exit_code == 0
    store = Store(f"sqlite:///{db}")
    held_out_key = load_schedule(next((out / "t" / "front").glob("*.json"))).provenance["held_out_key"]
    front = store.evaluations_for(held_out_key, list(final_archive(db)))
    assert len(front) == len(final_archive(db)), "the whole final front has held-out scores"
    for flags, expected in (
        (("--max-macs", "0.5"), min((r for r in front if r.cost <= 0.5), key=lambda r: r.quality_loss)),
        (("--max-loss", "1.0"), min(front, key=lambda r: r.cost)),
    ):
        target = tmp_path / "pick.json"
        result = runner.invoke(app, ["export", "--run", "t", "--db", f"sqlite:///{db}", "--out", str(target), *flags])
        assert result.exit_code == 0 and "chosen on held-out images" in result.output, result.output
        picked = load_schedule(target)
        assert picked.metrics["held_out_loss"]["value"] == expected.quality_loss
        assert "".join("1" if b else "0" for b in picked.genome()) == expected.genome
    knee = runner.invoke(
        app, ["export", "--run", "t", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "k.json"), "--knee"]
    )
    assert knee.exit_code == 0 and json.loads((tmp_path / "k.json").read_text())["provenance"]["run"] == "t"
    missing = runner.invoke(
        app, ["export", "--run", "nope", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "n.json"), "--knee"]
    )
    assert missing.exit_code == 2 and "no run named 'nope'" in missing.output


def test_digits_search_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "digits.txt"
    prompts.write_text("\n".join(f"a handwritten digit {d}" for d in range(0, 10, 2)))
    db, out = tmp_path / "d.db", tmp_path / "out"
    args = ["--model", "digits", "--generations", "2", "--population", "8", "--prompts", str(prompts),
            "--images-per-prompt", "2", "--held-out-images-per-prompt", "2",
            "--db", f"sqlite:///{db}", "--out", str(out), "--run", "d"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{db}")
    front = store.evaluations_for(store.get_run("d").eval_key, list(final_archive(db, "d")))
    spec = get_model("digits")
    no_cache = CacheSchedule.all_compute(block_groups(spec), spec.default_steps).digest()
    uncached = store.lookup(store.get_run("d").eval_key, [no_cache])[no_cache]
    assert uncached.quality_loss == pytest.approx(0.0, abs=1e-6), "fidelity to itself: 100 dB, the cap"
    run = store.get_run("d")
    assert (run.metric, run.config["guard"], run.config["batch_size"]) == ("frechet", "confirm", 100)
    assert run.config["objective"] == "fidelity", "the digits models search for fidelity by default"
    assert len(uncached.scores["prompt_scores"]) == 5, "the fidelity objective: one unit per prompt"
    assert len(uncached.scores["families"]["quality"]) == 2, "the Fréchet rise: one unit per seed"
    assert min(r.quality_loss for r in front) <= uncached.quality_loss + 1e-6
    assert min(r.cost for r in front) < 0.5
    versus = (out / "d" / "vs_fora.md").read_text().splitlines()
    header = "| baseline | MACs | rival MACs | quality | fidelity (PSNR) | adherence | second judge | verdict "
    claims = versus[versus.index(header + "| uncached vs baseline |") + 2 :]
    names = [row.split(" | ")[0].strip("| ") for row in claims]
    assert names == ["fora-2", "10 steps", "fora-3", "7 steps", "fora-4", "5 steps", "fora-5", "fora-6", "4 steps"]
    assert "Held-out images: 10 (5 prompts × 2 seeds from 1000000)" in versus[0]
    words = ("better", "trade-off", "tie", "worse", "FORA kept", "-")
    assert all(row.split(" | ")[-2].startswith(words) for row in claims)
    ceilings = [row.split(" | ")[-1].strip(" |") for row in claims]
    assert all(c.startswith(("better", "trade-off", "tie")) for c in ceilings), "100 dB: never behind in fidelity"
    assert versus[4].endswith("Margins: quality 1 FD, fidelity 1 dB PSNR, adherence 0.5 points.")
    figures = [row for row in versus if row.startswith("| front, vs ")]
    held_out_key = load_schedule(next((out / "d" / "front").glob("*.json"))).provenance["held_out_key"]
    held_out = 9 + len(figures) + 1
    assert store.count_evaluations(held_out_key) == held_out, "held out: each baseline, its rival, the uncached model"
    (judged,) = store.lookup(held_out_key, [no_cache]).values()
    assert min(judged.scores["families"]["psnr_db"]) == 100.0, "the split's references, judged, not made again"
    assert "held out: 10 images (5 prompts × 2 seeds from 1000000)" in result.output
    assert "vs 9 baselines at ≤ MACs: better" in result.output
    assert "the uncached model itself, by the same rule: " in result.output
    status = runner.invoke(app, ["status", "--db", f"sqlite:///{db}"], terminal_width=80)
    (row,) = [line for line in status.output.splitlines() if "finished" in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    evaluations = store.count_evaluations(run.eval_key)
    assert cells[:5] == ["d", "finished", "2/2", str(evaluations), "0"], status.output
    assert cells[6] == str(len(final_archive(db, "d"))) and cells[7] == "-"


def test_a_frechet_search_resamples_seeds_and_stores_the_distance(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "digits.txt"
    prompts.write_text("\n".join(f"a handwritten digit {d}" for d in range(0, 10, 2)))
    db, out = tmp_path / "f.db", tmp_path / "out"
    args = ["--model", "digits", "--metric", "frechet", "--objective", "quality", "--generations", "1",
            "--population", "8", "--images-per-prompt", "3", "--held-out-images-per-prompt", "2",
            "--prompts", str(prompts), "--db", f"sqlite:///{db}", "--out", str(out), "--run", "f"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{db}")
    spec = get_model("digits")
    no_cache = CacheSchedule.all_compute(block_groups(spec), spec.default_steps).digest()
    uncached = store.lookup(store.get_run("f").eval_key, [no_cache])[no_cache]
    units = uncached.scores["prompt_scores"]
    assert len(units) == 3, "one unit per seed"
    assert uncached.quality_loss == pytest.approx(1 - sum(units) / 3)
    assert units == [1.0, 1.0, 1.0], "the uncached run's rise over itself is zero"
    digests = [fora(block_groups(spec), spec.default_steps, n).digest() for n in (2, 4)]
    fora_records = store.lookup(store.get_run("f").eval_key, digests)
    fora_2, fora_4 = (fora_records[digest] for digest in digests)
    assert 0 < fora_2.quality_loss < fora_4.quality_loss, "FORA-4 raises the distance more than FORA-2"
    assert fora_4.scores["frechet_distance"] > fora_4.scores["frechet_distance_uncached"] > 0
    one_seed = list(args)
    one_seed[args.index("--images-per-prompt") + 1] = "1"
    refused = runner.invoke(app, one_seed)
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        "error: metric 'frechet' needs at least 2 seeds per prompt on every split: "
        "raise --images-per-prompt and --held-out-images-per-prompt"
    )


# Eight held-out images with their own spread, so that every family's paired interval has a width.
SPREAD = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.1]


def record(
    digest: str,
    loss: float,
    macs: float,
    prompt_losses: list[float] | None = None,
    psnr: float | None = None,
    adherence: float = 99.0,
) -> EvaluationRecord:
    """A record whose per-prompt scores average to `1 - loss` (or are `1 - prompt_losses`); with `psnr`, its
    families too: per-image PSNR around `psnr` dB and adherence around `adherence` points."""
    losses = prompt_losses if prompt_losses is not None else [loss] * 4
    scores: dict[str, object] = {"prompt_scores": [1 - x for x in losses]}
    if psnr is not None:
        scores["families"] = {
            "quality": [1 - x for x in losses],
            "psnr_db": [psnr + s for s in SPREAD],
            "adherence": [adherence + s for s in SPREAD],
        }
    return EvaluationRecord(digest, "", loss, macs, macs, None, scores, 0.0)


def claims_row(table: str, name: str) -> str:
    """The claims table's row of one baseline (the second table of vs_fora.md)."""
    return [row for row in table.splitlines() if row.startswith(f"| {name} |")][-1]


def test_baseline_comparison_picks_the_best_searched_schedule_within_its_macs() -> None:
    baselines = {
        "fora-2": record("f2", 0.12, 0.5),
        "fora-4": record("f4", 0.25, 0.25),
        "fora-5": record("f5", 0.28, 0.2),
        "fora-6": record("f6", 0.45, 0.2),
        "fora-9": record("f9", 0.5, 0.1),
    }
    front = [record("a", 0.30, 0.22), record("b", 0.10, 0.5), record("c", 0.00, 1.0), baselines["fora-5"]]
    comparisons = {c.name: c for c in compare_with_baselines(front, baselines)}
    assert list(comparisons) == ["fora-2", "fora-4", "fora-5", "fora-6", "fora-9"]
    assert comparisons["fora-2"].rival.digest == "b" and comparisons["fora-2"].verdict == "pending"
    assert comparisons["fora-4"].kept == "fora-5", "FORA-5 is on the front, cheaper and better than FORA-4's rival"
    assert comparisons["fora-6"].kept == "fora-5" and comparisons["fora-6"].verdict == "FORA kept"
    assert comparisons["fora-9"].rival is None and comparisons["fora-9"].verdict == "-"
    assert not any(c.beaten for c in comparisons.values()), "no claim without held-out images"
    table = baseline_table(list(comparisons.values()), full_macs=1.0)
    assert claims_row(table, "fora-2") == "| fora-2 | 0.500 | 0.500 | - | - | - | - | pending | - |"
    assert claims_row(table, "fora-6") == "| fora-6 | 0.200 | fora-5 | - | - | - | - | FORA kept | - |"
    assert claims_row(table, "fora-9") == "| fora-9 | 0.100 | - | - | - | - | - | - | - |"


def test_a_fewer_steps_baseline_is_judged_against_whatever_the_front_offers() -> None:
    fora_3 = record("f3", 0.10, 0.35, psnr=34.0)
    seven_steps = record("s7", 0.08, 0.35, psnr=29.0)
    held_out = {"f3": fora_3, "s7": seven_steps}
    comparisons = compare_with_baselines(
        [fora_3], {"fora-3": fora_3, "7 steps": seven_steps}, held_out=held_out, kept_names={"fora-3"}
    )
    versus = {c.name: c for c in comparisons}
    assert versus["fora-3"].verdict == "FORA kept"
    assert versus["7 steps"].rival is fora_3 and versus["7 steps"].kept is None, "FORA on the front is the rival"
    assert versus["7 steps"].verdict == "trade-off", "2 points of quality lost for 5 dB of PSNR gained"


def test_a_win_on_calibration_that_loses_on_held_out_images_is_reported_as_a_loss() -> None:
    fora = record("f3", 0.10, 0.35, [0.10, 0.11, 0.09, 0.10])
    lucky = record("lucky", 0.05, 0.34, [0.05, 0.05, 0.05, 0.05])
    held_out = {
        "f3": record("f3", 0.10, 0.35, [0.10, 0.11, 0.09, 0.10], psnr=30.0),
        "lucky": record("lucky", 0.20, 0.34, [0.19, 0.21, 0.20, 0.20], psnr=30.0),
    }
    (comparison,) = compare_with_baselines([lucky], {"fora-3": fora}, held_out=held_out)
    assert comparison.rival is lucky and comparison.rival_loss == 0.05, "chosen on the search's own loss"
    assert comparison.verdict == "worse" and not comparison.beaten
    assert comparison.claim.primary.difference.mean == pytest.approx(-0.10)
    table = baseline_table([comparison], full_macs=1.0)
    assert "| fora-3 | 0.350 | 0.10000 | 0.10000 | 30.00 | - | 99.0 | - |" in table
    assert "| front, vs fora-3 | 0.340 | 0.05000 | 0.20000 | 30.00 | - | 99.0 | - |" in table
    assert claims_row(table, "fora-3").startswith("| fora-3 | 0.350 | 0.340 | -0.1 [")
    assert table.rstrip().endswith("| worse | - |")
    even = record("lucky", 0.10, 0.34, [0.09, 0.11, 0.1, 0.1], psnr=30.0)
    tie = compare_with_baselines([lucky], {"fora-3": fora}, held_out={**held_out, "lucky": even})[0]
    assert tie.verdict == "tie" and not tie.beaten, "a difference inside the interval is a tie"
    (guarded,) = compare_with_baselines(
        [lucky], {"fora-3": fora}, held_out=held_out, significantly_better=lambda a, b: False
    )
    assert guarded.verdict == "FORA kept (lead within noise)" and not guarded.beaten
    row = claims_row(baseline_table([guarded], full_macs=1.0), "fora-3")
    assert row.endswith("| FORA kept (lead within noise) | - |"), "the held-out figures are shown, not claimed"


def rival_against_fora(psnr_drop: float, adherence_drop: float, margins: Margins | None = None) -> str:
    """The verdict on a rival better than FORA-3 in quality by 0.05 on every prompt, `psnr_drop` dB and
    `adherence_drop` points behind it, under the default margins (or `margins`)."""
    fora = record("f3", 0.10, 0.35, [0.10, 0.12, 0.08, 0.10], psnr=34.0, adherence=99.5)
    rival = record("r", 0.05, 0.34, [0.05, 0.07, 0.03, 0.05], psnr=34.0 - psnr_drop, adherence=99.5 - adherence_drop)
    rules = ClaimRules(margins=margins or Margins())
    (comparison,) = compare_with_baselines([rival], {"fora-3": fora}, held_out={"f3": fora, "r": rival}, rules=rules)
    return claims_row(baseline_table([comparison], 1.0, rules=rules), "fora-3").split(" | ")[-2]


def test_better_in_the_primary_metric_but_behind_in_another_family_is_a_trade_off() -> None:
    assert rival_against_fora(0.0, 0.0) == "better"
    assert rival_against_fora(0.5, 0.2) == "better", "within the margins: 1 dB of PSNR, 0.5 points of adherence"
    assert rival_against_fora(3.0, 0.0) == "trade-off (behind in fidelity)"
    assert rival_against_fora(0.0, 2.0) == "trade-off (behind in adherence)"
    assert rival_against_fora(3.0, 2.0) == "trade-off (behind in fidelity, adherence)"
    assert rival_against_fora(3.0, 0.0, Margins(fidelity=4.0)) == "better", "the margins are settable"


def test_the_uncached_model_is_judged_against_every_baseline_by_the_same_rule() -> None:
    """A baseline whose digits are read more often than the uncached model's cannot be beaten by a schedule
    that reproduces the uncached images: the ceiling column says so beside the claim."""
    fora = record("f3", 0.10, 0.35, [0.10, 0.12, 0.08, 0.10], psnr=34.0, adherence=99.5)
    rival = record("r", 0.05, 0.34, [0.05, 0.07, 0.03, 0.05], psnr=40.0, adherence=98.5)
    uncached = record("u", 0.0, 1.0, [0.0, 0.02, -0.02, 0.0], psnr=100.0, adherence=98.5)
    held_out = {"f3": fora, "r": rival, "u": uncached}
    (comparison,) = compare_with_baselines([rival], {"fora-3": fora}, held_out=held_out, uncached=uncached)
    assert comparison.verdict == "trade-off" and comparison.ceiling.verdict == "trade-off"
    assert comparison.ceiling.primary.difference.mean == pytest.approx(0.10), "quality lead of the uncached model"
    row = claims_row(baseline_table([comparison], 1.0), "fora-3")
    assert row.endswith("| trade-off (behind in adherence) | trade-off (behind in adherence) |")
    assert verdict_lines([comparison]) == [
        "vs 1 baselines at ≤ MACs: better 0 · trade-off 1 · tie 0 · worse 0 · FORA kept 0",
        "the uncached model itself, by the same rule: trade-off 1",
    ]
    level = record("u", 0.0, 1.0, [0.0, 0.02, -0.02, 0.0], psnr=100.0, adherence=99.5)
    (fair,) = compare_with_baselines([rival], {"fora-3": fora}, held_out={**held_out, "u": level}, uncached=level)
    assert fair.ceiling.verdict == "better", "as often read as FORA's: the rule's ceiling is 'better'"


def test_paired_interval_of_identical_scores_is_zero_and_of_a_shift_is_the_shift() -> None:
    scores = [0.91, 0.95, 0.87, 0.99, 0.93]
    same = paired_difference(scores, scores)
    assert (same.mean, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, 0)
    shifted = paired_difference([x + 0.02 for x in scores], scores)
    assert shifted.mean == pytest.approx(0.02) and shifted.low == pytest.approx(0.02)
    assert shifted.high == pytest.approx(0.02) and shifted.verdict == 1
    noisy = paired_difference([0.9, 0.8, 1.0, 0.7], [0.85, 0.85, 0.85, 0.85])
    assert noisy.low < 0 < noisy.high and noisy.verdict == 0
    assert paired_difference(scores, scores[::-1], seed=3) == paired_difference(scores, scores[::-1], seed=3)
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0], [1.0, 2.0])


def test_first_population_holds_the_fora_baselines_and_is_seeded() -> None:
    spec = get_model("pixart-alpha")
    template = CacheSchedule.all_compute(block_groups(spec), spec.default_steps)
    population = initial_population(template, 24, seed=3)
    assert population.shape == (24, template.genome_length)
    assert len({row.tobytes() for row in population}) == 24
    assert any(row.all() for row in population), "the no-cache schedule anchors the quality end"
    for n, row in zip(FORA_BASELINES, population, strict=False):
        assert np.array_equal(row, fora(template.groups, template.num_steps, n).genome())
        assert template.with_genome(row).compute_fraction == pytest.approx(len(range(0, 20, n)) / 20)
    assert np.array_equal(population, initial_population(template, 24, seed=3))
    assert not np.array_equal(population, initial_population(template, 24, seed=4))


def test_prompts_the_model_sees_alike_count_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "digits.txt"
    prompts.write_text("seven\na handwritten digit 7\nDigit 3\nthe number three, written by hand\n")
    prepared = prepare(SearchRequest(model="digits", generations=1, prompts=str(prompts), out=str(tmp_path)))
    assert prepared.settings.prompts == ("seven", "Digit 3")
    assert prepared.splits.held_out.prompts == ("seven", "Digit 3"), "digits: the same digits, other seeds"
    assert prepared.settings.num_images == 2 * 8 and prepared.splits.held_out.num_images == 2 * 100
    (note,) = prepared.notes
    assert "4 calibration prompts give only 2 distinct images per seed on digits" in note


def test_the_splits_never_share_an_image(tmp_path, tiny_pixart_dir, prompts) -> None:  # type: ignore[no-untyped-def]
    prepared = prepare(
        SearchRequest(model=str(tiny_pixart_dir), generations=1, prompts=str(prompts), out=str(tmp_path))
    )
    splits = prepared.splits
    seeds = {
        name: {(p, settings.seed + j) for p in settings.prompts for j in range(settings.images_per_prompt)}
        for name, settings in (("c", splits.calibration), ("f", splits.confirmation), ("h", splits.held_out))
    }
    assert not seeds["c"] & seeds["f"] and not seeds["c"] & seeds["h"] and not seeds["f"] & seeds["h"]
    assert len({splits.calibration.key(), splits.confirmation.key(), splits.held_out.key()}) == 3
    general = prepare(SearchRequest(model="pixart-alpha", generations=1, metric="fidelity", out=str(tmp_path)))
    assert len(general.settings.prompts) == 100 and len(general.splits.held_out.prompts) == 50
    assert not set(general.settings.prompts) & set(general.splits.held_out.prompts)


def test_screened_search_is_deterministic_resumes_and_screens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The default preset breeds four offspring per candidate and its surrogate picks which are generated
    (from the third generation here, once 16 evaluations exist): a run stopped after two generations and
    resumed asks for the same populations as one that ran through, and without screening they differ."""
    prompts = tmp_path / "digits.txt"
    prompts.write_text("\n".join(f"a handwritten digit {d}" for d in (1, 4, 7)))

    def search(db: str, generations: int) -> list[tuple[str, ...]]:
        args = ["--model", "digits", "--metric", "fidelity", "--generations", str(generations), "--population",
                "8", "--prompts", str(prompts), "--images-per-prompt", "2", "--held-out-images-per-prompt", "2",
                "--db", f"sqlite:///{tmp_path / db}", "--out", str(tmp_path / "out"), "--run", "s"]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        return [g.population for g in Store(f"sqlite:///{tmp_path / db}").generations("s")]

    first = search("a.db", 3)
    assert search("c.db", 2) == first[:2]
    assert search("c.db", 3) == first
    config = SearchRequest(
        model="digits", generations=3, metric="fidelity", population=8, prompts=str(prompts), images_per_prompt=2,
        held_out_images_per_prompt=2, db=f"sqlite:///{tmp_path / 'd.db'}", out=str(tmp_path / "out"), run="s",
    )  # fmt: skip
    unscreened = SearchRun(prepare(config), preset=replace(PRESETS["default"], screen=1))
    unscreened.run()
    assert unscreened.search.loss_model() is None, "screen 1 fits no model"
    populations = [g.population for g in Store(config.db).generations("s")]
    assert populations[0] == first[0] and populations[2] != first[2]


def test_a_raced_search_is_deterministic_resumes_and_generates_fewer_images(tmp_path, tiny_pixart_dir) -> None:  # type: ignore[no-untyped-def]
    """Every lever on (screening, front refinement, confirmation, racing on a quarter of 24 prompts, shared
    prefixes): a run resumed after two generations asks for the same populations as one that ran through, with
    the same image counts; racing drops candidates, so it generates fewer images than the same preset without
    it; every finished candidate's calibration record is stored, merged from its two parts; and a run that
    shares no prefix stores exactly the same evaluations."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"a photo of object number {i}" for i in range(24)))
    raced = replace(PRESETS["default"], race=0.25)

    def search(
        db: str, generations: int, preset: Preset = raced, prefix_memory: int = 1024
    ) -> tuple[SearchRun, list[GenerationRecord]]:
        config = SearchRequest(
            model=str(tiny_pixart_dir), generations=generations, metric="fidelity", population=6, steps=4,
            prompts=str(prompts), db=f"sqlite:///{tmp_path / db}", out=str(tmp_path / "out"), run="r",
            prefix_memory=prefix_memory,
        )  # fmt: skip
        run = SearchRun(prepare(config), preset=preset)
        run.run()
        return run, Store(config.db).generations("r")

    straight, generations = search("a.db", 5)
    assert straight.search.race is not None and len(straight.search.race.race.prompts) == 8
    assert straight.search.state.raced_out, "the race dropped nothing"
    search("b.db", 2)
    resumed, again = search("b.db", 5)
    assert [g.population for g in again] == [g.population for g in generations]
    assert [g.images for g in again] == [g.images for g in generations]
    assert [r.images for r in resumed.reports] == [g.images for g in generations]
    assert resumed.search.state.raced_out.keys() == straight.search.state.raced_out.keys()
    _, unraced = search("c.db", 5, PRESETS["default"])
    assert unraced[0].population == generations[0].population
    assert sum(g.images for g in generations) < sum(g.images for g in unraced)
    finished = [r for r in straight.search.state.records.values() if "raced_prompts" in r.scores]
    assert finished and all(len(r.scores["prompt_scores"]) == 24 for r in finished)
    stored = Store(f"sqlite:///{tmp_path / 'a.db'}").lookup(straight.search.eval_key, [r.digest for r in finished])
    assert stored.keys() == {r.digest for r in finished}
    alone, _ = search("d.db", 5, prefix_memory=0)
    records = straight.search.state.records
    assert alone.search.state.records.keys() == records.keys()
    for digest, record in alone.search.state.records.items():
        assert record.scores["prompt_scores"] == records[digest].scores["prompt_scores"], "sharing changed a score"
    shared = sum(r.latency_s is None for r in records.values())
    assert shared and not any(r.latency_s is None for r in alone.search.state.records.values())


def test_racing_runs_only_on_per_prompt_metrics_and_renames_no_earlier_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Fréchet distance's units are seeds of one image set, so `fast` does not race on digits; and a lever
    left off is not part of a run's name, so the quick start's run (named in the README) keeps its name."""
    quick_start = prepare(SearchRequest(model="digits", generations=8, out=str(tmp_path)))
    assert quick_start.run == "digits-frechet-fidelity-default-s0-4def8366"
    searched_for_quality = prepare(SearchRequest(model="digits", generations=8, objective="quality", out=str(tmp_path)))
    assert searched_for_quality.run == "digits-frechet-default-s0-3984c9f7", "earlier quality runs keep their name"
    assert runnable_preset(PRESETS["fast"], quick_start.settings).race == 0
    fidelity = prepare(SearchRequest(model="pixart-alpha", generations=1, metric="fidelity", out=str(tmp_path)))
    assert runnable_preset(PRESETS["fast"], fidelity.settings) == PRESETS["fast"]
    few = replace(fidelity.settings, prompts=fidelity.settings.prompts[:MIN_RACE_PROMPTS])
    assert runnable_preset(PRESETS["fast"], few).race == 0


def test_construct_then_refine_resume_and_repeat(tmp_path, tiny_pixart_dir, prompts) -> None:  # type: ignore[no-untyped-def]
    db, out = tmp_path / "s.db", tmp_path / "out"
    # A later --run wins over search_args' own.
    construct = search_args(tiny_pixart_dir, prompts, db, out, 5, "--strategy", "construct", "--run", "c")
    result = runner.invoke(app, construct)
    assert result.exit_code == 0, result.output
    assert "construction: " in result.output and "1 generations" in result.output, "construct runs no search"
    assert "(Spearman ρ): in step " in result.output, "each layout's ranking, in its own units"
    model = json.loads((out / "c" / "construction.json").read_text())
    lanes = len(model["model"]["weights"])
    assert min(model["model"]["weights"]) >= 0 and len(model["model"]["gram"][0]) == 4, "steps × steps per lane"
    assert np.array(model["model"]["output_gram"]).shape == (4, 4), "and the transformer output's"
    store = Store(f"sqlite:///{db}")
    genomes = {r.genome for r in store.evaluations_for(store.get_run("c").eval_key, list(final_archive(db, "c")))}
    assert {len(g) for g in genomes} <= {3 * lanes, 3 * lanes + 2}, "a forecast fill adds two fill genes"
    again = runner.invoke(app, construct)
    assert again.exit_code == 0 and "0 new evaluations" in again.output, "a repeated run pays for nothing"

    refine = search_args(tiny_pixart_dir, prompts, db, out, 2, "--strategy", "refine", "--run", "r")
    assert runner.invoke(app, refine).exit_code == 0
    other_db = tmp_path / "other.db"
    fresh = search_args(tiny_pixart_dir, prompts, other_db, tmp_path / "o", 2, "--strategy", "refine", "--run", "r")
    assert runner.invoke(app, fresh).exit_code == 0
    assert final_archive(db, "r") == final_archive(other_db, "r"), "same seed, same front"
    bad = runner.invoke(app, [*refine, "--strategy", "anneal"])
    assert bad.exit_code == 2 and "strategy" in bad.output and "'anneal'" in bad.output
