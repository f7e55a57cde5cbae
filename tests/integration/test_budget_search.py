"""`--budget`: local search for the best schedule at one MAC budget. The search on a hand-made objective
(moves keep the cost, the loss never rises above the start's, the same seed gives the same schedule), and
the command on digits (a schedule within the budget, judged on held-out images; re-running pays nothing)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.cli import app
from ecad_search.cost.latency import LatencyModel, latency_probes
from ecad_search.cost.latency import computations as latency_computations
from ecad_search.cost.latency import kinds as latency_kinds
from ecad_search.generation import device_label
from ecad_search.heuristics import fora
from ecad_search.models import block_groups, get_model
from ecad_search.pool import LocalPool, genome_text
from ecad_search.schedule import CacheSchedule
from ecad_search.search.budget import BudgetPlan, BudgetSearch, Lanes, Moves, Scoring
from ecad_search.search.budget_run import BudgetRun, earlier_fronts, latency_split, search_at_budget
from ecad_search.store import EvaluationRecord, Store

runner = CliRunner()
STEPS = 20


def template() -> CacheSchedule:
    return CacheSchedule.all_compute(block_groups(get_model("digits")), STEPS)


def fraction(schedule: CacheSchedule) -> float:
    return float(schedule.genome().mean())


def distance_to(target: np.ndarray) -> Callable[[dict[str, CacheSchedule]], dict[str, EvaluationRecord]]:
    """A loss that is the number of genes in which a mask differs from a target: the search should walk
    towards the target."""

    def score(schedules: dict[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        return {
            digest: EvaluationRecord(digest, "0", float(np.sum(s.genome() != target)), fraction(s), 0.0, None, {}, 0.0)
            for digest, s in schedules.items()
        }

    return score


def test_lanes_round_trip_the_genome() -> None:
    schedule = fora(template().groups, STEPS, 3)
    lanes = Lanes(schedule)
    grid = lanes.grid(schedule.genome())
    assert grid.shape == (lanes.count, STEPS - 1) and (lanes.genome(grid) == schedule.genome()).all()
    assert grid[0].tolist() == [s % 3 == 0 for s in range(1, STEPS)], "a lane is one component over the steps"


def test_the_search_keeps_the_budget_and_only_improves() -> None:
    base = template()
    rng = np.random.default_rng(1)
    target = rng.random(base.genome_length) < 0.3
    score = distance_to(target)
    starts = [fora(base.groups, STEPS, n) for n in range(2, STEPS)]
    plan = BudgetPlan(anneal_moves=40, neighbours=10, climb_rounds=6)
    outcome = BudgetSearch(base, 0.35, Scoring(score), fraction, seed=0, plan=plan).run(starts)
    assert fraction(outcome.schedule) <= 0.35 + 1e-12
    affordable = [s for s in starts if fraction(s) <= 0.35]
    best_start = min(affordable, key=lambda s: float(np.sum(s.genome() != target)))
    assert outcome.start.digest() == best_start.digest(), "the best FORA within 35 % by the search's loss starts it"
    assert outcome.record.quality_loss < outcome.start_record.quality_loss, "it walked towards the target"
    again = BudgetSearch(base, 0.35, Scoring(distance_to(target)), fraction, seed=0, plan=plan).run(starts)
    assert again.schedule.digest() == outcome.schedule.digest(), "the same seed gives the same schedule"
    with pytest.raises(ValueError, match="no starting schedule costs at most 1%"):
        BudgetSearch(base, 0.01, Scoring(score), fraction, seed=0, plan=plan).run(starts)


@pytest.mark.parametrize(("value", "message"), [("1.5", "between 0 and 1"), ("0", "between 0 and 1")])
def test_bad_budgets_are_one_line_errors(tmp_path: Path, value: str, message: str) -> None:
    result = runner.invoke(app, ["--model", "digits", "--budget", value, "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "b.db").exists()
    latency = runner.invoke(app, ["--model", "digits", "--budget", "0.3", "--cost", "latency"])
    assert latency.exit_code == 2 and "leave out --cost latency" in latency.output


@pytest.mark.parametrize("value", ["1", "-0.1"])
def test_bad_race_shares_are_one_line_errors(tmp_path: Path, value: str) -> None:
    args = ["--model", "digits", "--budget", "0.35", "--budget-race", value, "--db", f"sqlite:///{tmp_path / 'b.db'}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and f"--budget-race {float(value)}: give a share" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b.db").exists()


def test_a_budget_search_on_digits(tmp_path: Path) -> None:
    args = ["--model", "digits", "--budget", "0.35", "--metric", "fidelity", "--images-per-prompt", "1",
            "--held-out-images-per-prompt", "2", "--db", f"sqlite:///{tmp_path / 'b.db'}", "--out", str(tmp_path),
            "--run", "b", "--budget-moves", "4"]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "budget 35%:" in first.output and "held out: loss" in first.output
    assert "Margins: quality 0.005, fidelity 1 dB PSNR, adherence 0.5 points." in first.output
    against = [line.strip() for line in first.output.splitlines() if line.strip().startswith("vs ")]
    assert [line.split(" (loss")[0] for line in against][-1] == "vs 7 steps", "fewer steps at the budget, judged"
    assert all(" dB [" in line and " points [" in line for line in against), "every family, with intervals"
    schedule = json.loads((tmp_path / "b" / "budget-35.json").read_text())
    assert schedule["provenance"]["method"] == "budget search"
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 new evaluations, 0 images generated" in again.output, again.output


def test_whole_step_moves_keep_every_component_of_a_step_together() -> None:
    base = template()
    target = np.zeros(base.genome_length, dtype=bool)
    plan = BudgetPlan(anneal_moves=20, neighbours=6, climb_rounds=3)
    starts = [fora(base.groups, STEPS, n) for n in range(2, 11)]
    outcome = BudgetSearch(
        base, 0.35, Scoring(distance_to(target)), fraction, seed=0, plan=plan, moves=Moves(step_share=1.0)
    ).run(starts)
    lanes = Lanes(base).grid(outcome.schedule.genome())
    assert (lanes == lanes[0]).all(), "every component computes on the same steps"
    assert fraction(outcome.schedule) <= 0.35 and outcome.record.quality_loss <= outcome.start_record.quality_loss


def test_a_coarse_anneal_moves_whole_steps_and_the_climb_single_components() -> None:
    """Every annealing candidate from a FORA start computes each step whole (BudCache's
    step-level space, where moves are large enough to tell apart); the climb then refines single components."""
    base = template()
    target = np.random.default_rng(6).random(base.genome_length) < 0.3
    score = distance_to(target)
    batches: list[list[CacheSchedule]] = []

    def logged(schedules: dict[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        batches.append(list(schedules.values()))
        return score(schedules)

    def whole(schedule: CacheSchedule) -> bool:
        lanes = Lanes(base).grid(schedule.genome())
        return bool((lanes == lanes[0]).all())

    starts = [fora(base.groups, STEPS, n) for n in range(2, 11)]
    plan = BudgetPlan(anneal_moves=20, neighbours=8, climb_rounds=3)
    outcome = BudgetSearch(base, 0.35, Scoring(logged), fraction, seed=0, plan=plan).run(starts)
    annealed, climbed = batches[1:21], [s for batch in batches[21:] for s in batch]
    assert all(len(batch) == 1 and whole(batch[0]) for batch in annealed)
    assert climbed and not all(whole(s) for s in climbed), "the climb moves single components too"
    assert fraction(outcome.schedule) <= 0.35 + 1e-12
    assert outcome.record.quality_loss < outcome.start_record.quality_loss


def test_earlier_fronts_on_the_same_split_are_starting_points(tmp_path: Path) -> None:
    base = template()
    front = [fora(base.groups, STEPS, n) for n in (3, 5)]
    elsewhere = fora(base.groups, STEPS, 7)

    def record(schedule: CacheSchedule) -> EvaluationRecord:
        return EvaluationRecord(schedule.digest(), genome_text(schedule), 1.0, fraction(schedule), 1.0, None, {}, 0.0)

    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        for run, key, schedules in (("a", "k", front), ("b", "other", [elsewhere])):
            store.start_run(run, {}, key, "digits", "frechet", 0, "0")
            store.record_evaluations(key, [record(s) for s in schedules])
            digests = [s.digest() for s in schedules]
            store.record_generation(run, 0, digests, digests, 0.0, len(digests), 0, 1.0)
        store.start_run("c", {}, "k", "digits", "frechet", 0, "0")  # started, no generation yet
        starts = earlier_fronts(store, base, "k")
    assert sorted(s.digest() for s in starts) == sorted(s.digest() for s in front)
    assert all(s.name.startswith("front-") for s in starts)


def noisy_distance_to(
    target: np.ndarray, noise: float
) -> Callable[[dict[str, CacheSchedule]], dict[str, EvaluationRecord]]:
    """`distance_to` measured on 8 units, each off by its own noise (seeded by the mask), as a metric's
    per-seed scores are: improvements of a gene or two are within noise."""

    def score(schedules: dict[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        records = {}
        for digest, s in schedules.items():
            units = -float(np.sum(s.genome() != target)) + np.random.default_rng(int(digest[:8], 16)).normal(
                0, noise, 8
            )
            scores = {"prompt_scores": units.tolist()}
            records[digest] = EvaluationRecord(
                digest, "0", float(1 - units.mean()), fraction(s), 0.0, None, scores, 0.0
            )
        return records

    return score


def test_no_move_leaves_the_budget_even_from_broken_up_steps() -> None:
    """From a start at the budget in which no step computes every component (so a whole-step move has no step
    to move and would have to add one), every candidate the search scores stays within the budget."""
    base = template()
    lanes = Lanes(base)
    grid = np.zeros((lanes.count, lanes.steps), dtype=bool)
    grid[np.arange(lanes.count), np.arange(lanes.count) % lanes.steps] = True
    start = base.with_genome(lanes.genome(grid), name="scattered")
    budget = fraction(start)
    costs: list[float] = []
    score = distance_to(np.ones(base.genome_length, dtype=bool))

    def scored(schedules: dict[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        costs.extend(fraction(s) for s in schedules.values())
        return score(schedules)

    plan = BudgetPlan(anneal_moves=40, neighbours=10, climb_rounds=4)
    outcome = BudgetSearch(base, budget, Scoring(scored), fraction, seed=0, plan=plan, moves=Moves(step_share=0.5)).run(
        [start]
    )
    assert len(costs) > 1 and max(costs) <= budget + 1e-12 and fraction(outcome.schedule) <= budget + 1e-12


def test_a_climbing_round_goes_to_the_scorer_as_one_batch() -> None:
    """Annealing moves one schedule at a time (each from the one it accepted last); a climbing round's
    neighbours are all drawn from the same best schedule, so they are scored together: a pool with workers
    spreads them, and in process they share their first steps."""
    base = template()
    target = np.random.default_rng(5).random(base.genome_length) < 0.3
    score = distance_to(target)
    batches: list[int] = []

    def batched(schedules: dict[str, CacheSchedule]) -> dict[str, EvaluationRecord]:
        batches.append(len(schedules))
        return score(schedules)

    starts = [fora(base.groups, STEPS, n) for n in range(2, 11)]
    plan = BudgetPlan(anneal_moves=6, neighbours=8, climb_rounds=3)
    outcome = BudgetSearch(base, 0.35, Scoring(batched), fraction, seed=0, plan=plan, moves=Moves(step_share=0.0)).run(
        starts
    )
    affordable = sum(fraction(s) <= 0.35 for s in starts)
    assert batches[0] == affordable and batches[1:7] == [1] * 6
    rounds = batches[7:]
    assert 1 <= len(rounds) <= 3 and all(5 <= size <= 8 for size in rounds), batches
    assert outcome.evaluations == 6 + 8 * len(rounds), "every neighbour of a round counts, repeats included"


def test_racing_moves_generates_fewer_images_and_stores_whole_records(tmp_path: Path, tiny_pixart_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """`--budget-race 0.25` on the tiny PixArt (24 prompts, a per-prompt metric): moves race on 8 prompts
    against the schedule they moved from, and only those that could still be taken are finished. It
    generates fewer images than the same search without racing; every finished move's calibration record
    covers all 24 prompts; a re-run pays for nothing."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"a photo of object number {i}" for i in range(24)))

    def budget_search(db: str, race: float) -> tuple[BudgetRun, Store]:
        config = SearchRequest(
            model=str(tiny_pixart_dir), generations=1, metric="fidelity", steps=6, prompts=str(prompts),
            held_out_images_per_prompt=1, db=f"sqlite:///{tmp_path / db}", out=str(tmp_path / "out"), run="b",
        )  # fmt: skip
        prepared = prepare(config)
        pool = LocalPool(prepared.spec, prepared.config.device)
        store = Store(config.db)
        plan = BudgetPlan(anneal_moves=3, neighbours=8, climb_rounds=2, race=race)
        try:
            return search_at_budget(prepared, 0.5, pool, store, plan), store
        finally:
            pool.close()

    plain, _ = budget_search("plain.db", 0.0)
    raced, store = budget_search("raced.db", 0.25)
    store.close()
    assert raced.calibration_images < plain.calibration_images
    assert raced.outcome.record.quality_loss <= raced.outcome.start_record.quality_loss
    with sqlite3.connect(tmp_path / "raced.db") as connection:
        rows = connection.execute("SELECT eval_key, scores FROM ecad_evaluations").fetchall()
    by_size: dict[int, int] = {}
    for _, scores in rows:
        size = len(json.loads(scores)["prompt_scores"])
        by_size[size] = by_size.get(size, 0) + 1
    raced_count, finished = by_size[8], by_size[16]
    assert 0 < finished < raced_count, "the race dropped some neighbours and finished others"
    assert raced.dropped == raced_count - finished
    assert by_size[24] >= finished, "every finished neighbour has a record on all 24 prompts"
    again, store = budget_search("raced.db", 0.25)
    store.close()
    assert again.images == 0 and again.outcome.schedule.digest() == raced.outcome.schedule.digest()


def test_annealing_races_with_the_margin_its_draw_allows_and_climbing_with_none() -> None:
    """Every annealing move races against the schedule it moved from, with the margin −T ln u ≥ 0 that its
    acceptance draw allows; climbing neighbours race against the best with no margin; the search still only
    improves on its start."""
    base = template()
    target = np.random.default_rng(7).random(base.genome_length) < 0.3
    score = noisy_distance_to(target, 0.0)
    calls: list[tuple[int, str, float]] = []

    def race(schedules: dict[str, CacheSchedule], incumbent: EvaluationRecord, margin: float) -> dict:  # type: ignore[type-arg]
        calls.append((len(schedules), incumbent.digest, margin))
        records = score(schedules)
        return {d: r for d, r in records.items() if r.quality_loss - incumbent.quality_loss <= margin}

    starts = [fora(base.groups, STEPS, n) for n in range(2, 11)]
    plan = BudgetPlan(anneal_moves=12, neighbours=6, climb_rounds=3)
    search = BudgetSearch(base, 0.35, Scoring(score, race), fraction, seed=0, plan=plan)
    outcome = search.run(starts)
    annealing, climbing = calls[:12], calls[12:]
    assert all(size == 1 and margin > 0 for size, _, margin in annealing)
    assert climbing and all(size > 1 and margin == 0 for size, _, margin in climbing)
    assert len({digest for _, digest, _ in annealing}) > 1, "annealing races against the schedule it accepted last"
    assert outcome.record.quality_loss < outcome.start_record.quality_loss


def test_the_latency_model_recovers_additive_timings_and_moves_keep_its_prediction() -> None:
    """Timings that are exactly a fixed part plus a time per computation of each component kind give that
    model back; moving a computation along its lane keeps the predicted latency, as it keeps the MACs."""
    base = template()
    probes = latency_probes(base)
    assert set(probes) == {"uncached", "step-0-only"} | {f"only-{g}.{c}" for g, c in latency_kinds(base)}
    times = np.arange(1, len(latency_kinds(base)) + 1) * 1e-3
    seconds = {name: 0.25 + float(latency_computations(s) @ times) for name, s in probes.items()}
    model = LatencyModel.fit(base, seconds)
    assert model.fixed == pytest.approx(0.25) and model.per_computation == pytest.approx(tuple(times))
    start = fora(base.groups, STEPS, 3)
    lanes = Lanes(start)
    grid = lanes.grid(start.genome())
    grid[0] = np.roll(grid[0], 1)
    moved = start.with_genome(lanes.genome(grid))
    assert moved.digest() != start.digest() and model.seconds(moved) == pytest.approx(model.seconds(start))
    with pytest.raises(ValueError, match="no timing for the latency probes step-0-only"):
        LatencyModel.fit(base, {k: v for k, v in seconds.items() if k != "step-0-only"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "0.3", "--budget-latency", "0.5"], "give --budget (a share of the MACs) or --budget-latency"),
        (["--budget-latency", "1.5"], "--budget-latency 1.5: give a fraction of the uncached latency"),
        (["--budget-latency", "0.5", "--cost", "latency"], "--budget-latency times runs of its own"),
    ],
)
def test_bad_latency_budgets_are_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["--model", "digits", *extra, "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b.db").exists()


def test_a_latency_budget_search_times_its_probes_once_and_checks_what_it_found(tmp_path: Path) -> None:
    """`--budget-latency` on digits: the probes are timed on a latency-cost split of the calibration prompts
    and stored, the found schedule's predicted latency is within the budget and it is timed as well, and a
    re-run pays for nothing."""
    config = SearchRequest(
        model="digits", generations=1, metric="fidelity", steps=10, images_per_prompt=2,
        held_out_images_per_prompt=2, db=f"sqlite:///{tmp_path / 'b.db'}", out=str(tmp_path / "out"), run="b",
    )  # fmt: skip
    prepared = prepare(config)

    def budget_search() -> BudgetRun:
        pool = LocalPool(prepared.spec, prepared.config.device)
        plan = BudgetPlan(anneal_moves=4, neighbours=4, climb_rounds=1)
        try:
            with Store(config.db) as store:
                return search_at_budget(prepared, 0.9, pool, store, plan, by_latency=True)
        finally:
            pool.close()

    first = budget_search()
    check = first.latency
    assert check is not None and check.measured is not None and check.measured > 0 and check.uncached_s > 0
    assert check.predicted <= 0.9 + 1e-12 and any(t > 0 for t in check.model.per_computation)
    probes = len(latency_probes(first.outcome.schedule))
    assert first.calibration_images >= probes * prepared.settings.num_images, "the probes were timed"
    again = budget_search()
    assert again.images == 0 and again.outcome.schedule.digest() == first.outcome.schedule.digest()
    assert again.latency is not None and again.latency.model == check.model
    timed = latency_split(prepared.settings, LocalPool(prepared.spec, "cpu"))
    assert timed.timed_on == device_label("cpu") and timed.timed_on.startswith("cpu ")
    elsewhere = replace(timed, timed_on="NVIDIA H100 80GB HBM3")
    assert elsewhere.key() != timed.key(), "timings from another device are not reused"
    assert replace(timed, timed_on="").key() == replace(prepared.settings, cost="latency").key()
    with Store(config.db) as store:
        assert (
            len(store.lookup(timed.key(), [s.digest() for s in latency_probes(first.outcome.schedule).values()])) == 5
        )
