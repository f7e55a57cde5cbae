"""Ray workers on a real local Ray cluster (CPU actors, the bundled digits model): the same archive and stored
evaluations as in-process, a worker killed mid-candidate, a mask that kills every worker it reaches, and
the one-line refusal without Ray."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import torch
from typer.testing import CliRunner

from ecad_search.app.prepare import prepare
from ecad_search.app.requests import SearchRequest
from ecad_search.cli import app
from ecad_search.evaluation import run_template
from ecad_search.generation import device_label
from ecad_search.models import get_model
from ecad_search.pool import make_pool
from ecad_search.pool.ray_pool import FAULT_VARIABLE
from ecad_search.search.seeding import FORA_BASELINES, initial_population
from ecad_search.store import Store

runner = CliRunner()
BUSY_WORKER = "ray::EvaluationWorker.evaluate"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local cluster for the module: two CPUs, so two single-threaded CPU workers."""
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="WARNING"
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "digits.txt"
    path.write_text("a handwritten digit 1\na handwritten digit 4\na handwritten digit 7\n")
    return path


def search_args(prompts: Path, db: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model", "digits", "--generations", "2", "--population", "8", "--images-per-prompt", "4",
        "--held-out-images-per-prompt", "2", "--prompts", str(prompts), "--db", f"sqlite:///{db}",
        "--out", str(out), "--run", "w", *extra,
    ]  # fmt: skip


def in_one_thread(args: list[str]) -> None:
    """The reference: a search in this process with one torch thread, as a CPU worker has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert " alive · " not in result.output, "no workers in-process"


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory, prompts: Path) -> Path:
    folder = tmp_path_factory.mktemp("in_process")
    in_one_thread(search_args(prompts, folder / "w.db", folder / "out"))
    return folder / "w.db"


def stored(db: Path) -> tuple[list[tuple], list[tuple]]:
    """Every stored evaluation (without its timings) and every generation's population and archive."""
    with sqlite3.connect(db) as connection:
        evaluations = connection.execute(
            "SELECT c.digest, e.eval_key, e.quality_loss, e.cost, e.macs, e.scores FROM ecad_evaluations e "
            "JOIN ecad_candidates c ON c.id = e.candidate_id ORDER BY c.digest, e.eval_key"
        ).fetchall()
        generations = connection.execute(
            'SELECT "index", population, archive, hypervolume FROM ecad_generations ORDER BY "index"'
        ).fetchall()
    return evaluations, generations


def shared(db: Path) -> int:
    """Evaluations that took their first steps from another mask's run (these record no latency)."""
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM ecad_evaluations WHERE latency_s IS NULL").fetchone()[0]


def test_two_workers_store_what_one_process_stores(tmp_path, ray_cluster, prompts, in_process) -> None:  # type: ignore[no-untyped-def]
    """Each worker shares the first steps of the masks it is given together, as one process does."""
    result = runner.invoke(app, search_args(prompts, tmp_path / "w.db", tmp_path / "out", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert "workers 2/2 alive · 0 busy · 0 restarted" in result.output
    evaluations, generations = stored(tmp_path / "w.db")
    assert (evaluations, generations) == stored(in_process)
    assert len(evaluations) > 20 and len(generations) == 2
    assert 0 < shared(tmp_path / "w.db") <= shared(in_process)


@pytest.mark.parametrize(("preset", "prompt_count", "generations"), [("default", 2, 2), ("fast", 24, 3)])
def test_pixart_workers_store_what_one_process_stores(  # type: ignore[no-untyped-def]
    tmp_path, ray_cluster, tiny_pixart_dir, preset, prompt_count, generations
) -> None:
    """Also with racing (`fast` on 24 prompts): the race and rest records, the merged calibration records and
    the generations are the same whatever answers first."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"a photo of object number {i}" for i in range(prompt_count)))

    def args(name: str, *extra: str) -> list[str]:
        return [
            "--model", str(tiny_pixart_dir), "--metric", "fidelity", "--steps", "4", "--generations",
            str(generations), "--population", "6", "--preset", preset, "--prompts", str(prompts),
            "--db", f"sqlite:///{tmp_path / name}", "--out", str(tmp_path / "out"), "--run", name, *extra,
        ]  # fmt: skip

    in_one_thread(args("local.db"))
    result = runner.invoke(app, args("ray.db", "--workers", "2"))
    assert result.exit_code == 0, result.output
    local, ray_run = stored(tmp_path / "local.db"), stored(tmp_path / "ray.db")
    assert ray_run == local and len(local[0]) > 10
    raced = [scores for *_, scores in local[0] if "raced_prompts" in scores]
    assert bool(raced) == (preset == "fast")


def test_a_raced_budget_search_on_workers_stores_what_one_process_stores(  # type: ignore[no-untyped-def]
    tmp_path, ray_cluster, tiny_pixart_dir
) -> None:
    """`--budget` with racing on two workers: climbing rounds go out as batches, the race prompts are encoded
    before worker 0 drops its text encoders, and the same schedule and records result as in-process."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"a photo of object number {i}" for i in range(24)))

    def args(name: str, *extra: str) -> list[str]:
        return [
            "--model", str(tiny_pixart_dir), "--metric", "fidelity", "--steps", "6", "--budget", "0.5",
            "--budget-moves", "4", "--held-out-images-per-prompt", "1", "--prompts", str(prompts),
            "--db", f"sqlite:///{tmp_path / name}.db", "--out", str(tmp_path / name), "--run", "b", *extra,
        ]  # fmt: skip

    in_one_thread(args("local"))
    result = runner.invoke(app, args("ray", "--workers", "2"))
    assert result.exit_code == 0, result.output
    local, ray_run = stored(tmp_path / "local.db"), stored(tmp_path / "ray.db")
    assert ray_run == local
    assert any(len(json.loads(scores)["prompt_scores"]) == 8 for *_, scores in local[0]), "nothing raced"
    found = [json.loads((tmp_path / name / "b" / "budget-50.json").read_text()) for name in ("local", "ray")]
    local_schedule, ray_schedule = ({k: v for k, v in s.items() if k != "provenance"} for s in found)
    assert ray_schedule == local_schedule


def test_workers_report_the_device_they_time_on(ray_cluster) -> None:  # type: ignore[no-untyped-def]
    """`--budget-latency` keys its timings by the device that ran them: on workers, theirs, not the driver's."""
    pool = make_pool(get_model("digits"), "cpu", workers=1)
    try:
        assert pool.device_label() == device_label("cpu")
    finally:
        pool.close()


def kill_the_first_busy_worker(killed: list[int], deadline_s: float = 120) -> None:
    """Kill, by its pid, the first worker process seen scoring a candidate."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        busy = [int(line.split()[0]) for line in listing.splitlines()[1:] if BUSY_WORKER in line]
        if busy:
            subprocess.run(["kill", "-9", str(busy[0])], check=True)
            killed.append(busy[0])
            return
        time.sleep(0.02)


def test_a_worker_killed_mid_candidate_loses_and_duplicates_nothing(tmp_path, ray_cluster, prompts, in_process) -> None:  # type: ignore[no-untyped-def]
    killed: list[int] = []
    killer = threading.Thread(target=kill_the_first_busy_worker, args=(killed,), daemon=True)
    killer.start()
    result = runner.invoke(app, search_args(prompts, tmp_path / "w.db", tmp_path / "out", "--workers", "2"))
    killer.join(timeout=5)
    assert result.exit_code == 0, result.output
    assert len(killed) == 1, "a worker was seen busy and killed"
    assert "workers 2/2 alive · 0 busy · 1 restarted" in result.output
    assert stored(tmp_path / "w.db") == stored(in_process), "the killed candidate was scored again, once"


def test_a_mask_that_kills_every_worker_is_recorded_as_failed(tmp_path, ray_cluster, prompts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, out = tmp_path / "w.db", tmp_path / "out"
    config = SearchRequest(model="digits", generations=1, population=8, images_per_prompt=4, prompts=str(prompts))
    prepared = prepare(config)
    template = run_template(prepared.spec, prepared.settings)
    first = initial_population(template, 8, seed=0)
    deadly = template.with_genome(first[len(FORA_BASELINES)]).digest()
    monkeypatch.setenv(FAULT_VARIABLE, deadly)
    result = runner.invoke(app, search_args(prompts, db, out, "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert "failed 1" in result.output and "3 restarted" in result.output
    store = Store(f"sqlite:///{db}")
    (failure,) = store.failures(prepared.settings.key(), [deadly]).values()
    assert failure.attempts == 3 and "died" in failure.error
    assert store.lookup(prepared.settings.key(), [deadly]) == {}
    assert deadly not in store.generations("w")[-1].archive, "a failed mask is infeasible, never on the front"
    assert store.get_run("w").status == "finished"


def test_a_hung_candidate_is_killed_retried_and_recorded_as_failed(tmp_path, ray_cluster, prompts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ecad_search.pool.ray_pool import RayPool
    from ecad_search.search.splits import SplitScorer

    config = SearchRequest(model="digits", generations=1, images_per_prompt=2, prompts=str(prompts))
    prepared = prepare(config)
    template = run_template(prepared.spec, prepared.settings)
    schedules = {s.digest(): s for s in map(template.with_genome, initial_population(template, 6, seed=0))}
    hung = list(schedules)[5]
    monkeypatch.setenv(FAULT_VARIABLE, f"hang:{hung}")
    pool = RayPool(prepared.spec, workers=2, max_attempts=2, hang_factor=3.0, min_timeout_s=3.0)
    try:
        scorer = SplitScorer(prepared.settings, Store(f"sqlite:///{tmp_path / 'h.db'}"), pool)
        records = scorer.scores(schedules)
        assert set(records) == set(schedules) - {hung}
        failure = scorer.failures[hung]
        assert failure.attempts == 2 and failure.error == "its worker was hung and killed"
        assert pool.status.restarted == 2
    finally:
        pool.close()


def test_a_split_of_many_more_images_is_not_taken_for_a_hang(tmp_path, ray_cluster, prompts) -> None:  # type: ignore[no-untyped-def]
    """The hang timeout counts images, not candidates: candidates of 96 images, after a median set by
    candidates of 6, run far past 5 times that median and are not killed (a held-out split has over ten
    times the calibration's images per candidate)."""
    from ecad_search.pool.ray_pool import RayPool
    from ecad_search.search.splits import SplitScorer

    prepared = prepare(SearchRequest(model="digits", generations=1, images_per_prompt=2, prompts=str(prompts)))
    template = run_template(prepared.spec, prepared.settings)
    schedules = {s.digest(): s for s in map(template.with_genome, initial_population(template, 6, seed=0))}
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    pool = RayPool(prepared.spec, workers=2, hang_factor=5.0, min_timeout_s=0.0)
    try:
        pool.prepare(prepared.settings)
        assert len(SplitScorer(prepared.settings, store, pool).scores(schedules)) == 6
        large = replace(prepared.settings, images_per_prompt=32)
        assert len(SplitScorer(large, store, pool).scores(schedules)) == 6
        assert pool.status.restarted == 0
    finally:
        pool.close()


def test_workers_without_ray_is_one_line(tmp_path, prompts) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys; sys.modules['ray'] = None; from ecad_search.cli import main; "
        f"main({search_args(prompts, tmp_path / 'w.db', tmp_path / 'out', '--workers', '2')!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and result.stdout == ""
    assert lines == [
        "error: --workers and --ray-address need Ray, which is not installed: pip install 'ecad-search[cluster]'"
    ]
    assert not (tmp_path / "w.db").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder", ["tiny_pixart_dir", "tiny_flux_dir"])
def test_a_worker_given_the_inputs_scores_the_same_without_its_text_encoders(folder, request, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ecad_search.heuristics import fora
    from ecad_search.pool import LocalPool

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue house\n")
    model = str(request.getfixturevalue(folder))
    config = SearchRequest(model=model, generations=1, metric="fidelity", steps=4, prompts=str(prompts))
    prepared = prepare(config)
    settings = prepared.settings
    schedule = fora(run_template(prepared.spec, settings).groups, settings.steps, 2)
    computing, receiving = LocalPool(prepared.spec), LocalPool(prepared.spec)
    inputs = computing.split_inputs(settings)
    receiving.evaluator(settings, inputs)
    dropped = receiving.release_text_encoders()
    assert dropped and all(getattr(receiving.evaluator(settings).pipe, name) is None for name in dropped)
    records = []
    for pool in (computing, receiving):
        pool.evaluate(settings, {schedule.digest(): schedule}, records.append)
    assert records[0] == replace(records[1], wall_time_s=records[0].wall_time_s, latency_s=records[0].latency_s)
    assert records[0].quality_loss > 0, "FORA-2 differs from the uncached references the receiver was given"
