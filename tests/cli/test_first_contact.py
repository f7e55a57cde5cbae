"""What a new user meets first: instant light commands, fast and right errors, no hang, no traceback, no
foreign data touched, and a run that records how it ended however it ends.

These run the real `ecad-search` command in a subprocess where the process matters (imports, exit codes,
signals, time to an error); the rest go through typer's runner in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecad_search.cli import app
from ecad_search.store import Store

runner = CliRunner()

HEAVY = ("torch", "diffusers", "transformers", "ray")

# Runs the command in this interpreter, then reports (on stderr's last line) which heavy packages it imported.
PROBE = """
import json, sys
from ecad_search.cli import main
sys.argv = ["ecad-search", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "diffusers", "transformers", "ray"})
print(json.dumps(heavy), file=sys.stderr)
"""


def command(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):  # type: ignore[no-untyped-def]
    """The real command line in a fresh process: (exit code, stdout, stderr lines, seconds)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ecad_search", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, result.stdout, lines, time.perf_counter() - start


def heavy_imports(*args: str, cwd: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_importing_the_command_line_loads_no_model_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = f"import sys, ecad_search.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_light_commands_import_neither_torch_nor_diffusers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schedule = tmp_path / "fora3.json"
    assert heavy_imports("--help", cwd=tmp_path) == []
    assert heavy_imports("models", cwd=tmp_path) == []
    make_fora = ("heuristic", "fora", "--n", "3", "--model", "pixart-alpha", "--out", str(schedule))
    heavy_imports(*make_fora, cwd=tmp_path)
    assert schedule.exists(), "the first heuristic of a model may probe its cost table; later ones read it"
    assert heavy_imports(*make_fora, cwd=tmp_path) == []
    assert heavy_imports("describe", str(schedule), cwd=tmp_path) == []
    assert heavy_imports("schedules", cwd=tmp_path) == []
    assert heavy_imports("convert", str(schedule), str(tmp_path / "cd.json"), "--to", "cache-dit", cwd=tmp_path) == []
    Store(f"sqlite:///{tmp_path / 'r.db'}").close()
    assert heavy_imports("runs", "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path) == []
    assert heavy_imports("status", "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path) == []


def test_a_search_without_workers_imports_no_ray(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a handwritten digit 1\na handwritten digit 2\n")
    search = ("--model", "digits", "--generations", "1", "--population", "6", "--images-per-prompt", "2",
              "--held-out-images-per-prompt", "2", "--prompts", str(prompts), "--db", f"sqlite:///{tmp_path / 's.db'}",
              "--out", str(tmp_path / "out"))  # fmt: skip
    assert heavy_imports(*search, cwd=tmp_path) == ["diffusers", "torch", "transformers"]
    assert (tmp_path / "out").is_dir(), "the search ran"


def test_help_shows_no_type_noise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, out, _, _ = command("--help", cwd=tmp_path)
    assert code == 0 and "--help" in out and "<bool>" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "https://hub.ecad-search.invalid"},
         "cannot resolve the name"),
    ],
)  # fmt: skip
def test_a_model_that_is_not_here_fails_fast_with_the_fix(tmp_path, env, reason) -> None:  # type: ignore[no-untyped-def]
    env = {**env, "HF_HOME": str(tmp_path / "hf-home")}
    args = ("--model", "pixart-alpha", "--metric", "fidelity", "--generations", "1")
    code, _, lines, seconds = command(*args, cwd=tmp_path, env=env)
    assert code == 2 and len(lines) == 1, lines
    assert reason in lines[0] and "model 'pixart-alpha' is not on this machine" in lines[0]
    assert "`hf download PixArt-alpha/PixArt-XL-2-256x256`" in lines[0]
    assert seconds < 5, f"{seconds:.1f} s to the error"
    assert not (tmp_path / "ecad-search.db").exists() and not (tmp_path / "runs").exists()


def test_a_bad_number_is_one_line_not_a_box(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, out, lines, _ = command("--model", "digits", "--generations", "abc", cwd=tmp_path)
    assert code == 2 and out == "" and len(lines) == 1
    assert "'--generations'" in lines[0] and "ecad-search --help" in lines[0] and "╭" not in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "-1"), "--workers must be a whole number from 0 to"),
        (("--gpus-per-worker", "0"), "--gpus-per-worker must be above 0"),
        (("--db", "sqlite:///{tmp}/absent/r.db"), "folder '{tmp}/absent' does not exist"),
        (("--steps", "1"), "--steps must be a whole number from 2"),
        (("--strategy", "anneal"), "unknown --strategy 'anneal'"),
    ],
)
def test_an_error_that_needs_no_model_comes_before_torch(tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    args = tuple(arg.replace("{tmp}", str(tmp_path)) for arg in args)
    code, out, lines, _ = command("--model", "digits", *args, cwd=tmp_path)
    assert code == 2 and out == "" and len(lines) == 1, lines
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert heavy_imports("--model", "digits", *args, cwd=tmp_path) == []
    assert list(tmp_path.iterdir()) == [], "nothing written"


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        ("threshold=nan", "teacache's threshold must be a finite number of at least 0, got 'nan'"),
        ("threshold=-1", "teacache's threshold must be a finite number of at least 0, got -1"),
        ("threshold=[1]", "teacache's threshold must be a finite number of at least 0, got (1,)"),
    ],
)
def test_a_policy_knob_out_of_range_is_one_line(tmp_path, knob, message) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "x.png"
    result = runner.invoke(app, ["generate", "-p", "7", "--policy", "teacache", "--set", knob, "--out", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()
    args = ("generate", "-p", "7", "--policy", "teacache", "--set", knob, "--out", str(out))
    assert heavy_imports(*args, cwd=tmp_path) == [], "a knob is checked before torch loads"


def test_generate_refuses_nan_guidance_and_writes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["generate", "--prompt", "7", "--guidance", "nan", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--guidance must be a finite number" in result.output
    assert not (tmp_path / "x.png").exists()


def test_a_long_prompt_is_not_echoed_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["generate", "--prompt", "x" * 5000, "--out", str(tmp_path / "x.png")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and len(lines[0]) < 300, result.output
    assert "5,000 characters" in lines[0] and "names no digit" in lines[0]


def test_a_schedule_for_another_model_says_which_and_how_to_get_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schedule = tmp_path / "pixart.json"
    assert runner.invoke(app, ["heuristic", "fora", "--model", "pixart-alpha", "--out", str(schedule)]).exit_code == 0
    result = runner.invoke(
        app, ["generate", "--prompt", "7", "--schedule", str(schedule), "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2
    assert "is for pixart-alpha (28 transformer_blocks), but digits has 6 transformer_blocks" in result.output
    assert "ecad-search heuristic fora --model digits" in result.output


def test_a_binary_file_is_named_and_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    binary = tmp_path / "photo.json"
    binary.write_bytes(bytes(range(128, 256)))
    result = runner.invoke(app, ["describe", str(binary)])
    assert result.exit_code == 2 and str(binary) in result.output and "not UTF-8 text" in result.output


def test_export_names_the_missing_run_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "e.db"
    Store(f"sqlite:///{db}").close()
    result = runner.invoke(
        app, ["export", "--run", "nope", "--db", f"sqlite:///{db}", "--out", str(tmp_path / "x.json")]
    )
    assert result.exit_code == 2 and "no run named 'nope'" in result.output
    nothing = runner.invoke(app, ["runs", "--db", f"sqlite:///{tmp_path / 'absent.db'}"])
    assert nothing.exit_code == 2 and "no database at" in nothing.output
    assert not (tmp_path / "absent.db").exists(), "listing runs never creates a database"


def test_a_database_that_is_not_ours_is_refused_untouched(tmp_path, tiny_pixart_dir) -> None:  # type: ignore[no-untyped-def]
    foreign = tmp_path / "other-tool.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE ecad_runs (id TEXT, foo BLOB)")
        connection.execute("INSERT INTO ecad_runs VALUES ('x', x'00ff')")
    before = digest(foreign)
    args = ["--model", str(tiny_pixart_dir), "--generations", "1", "--population", "4", "--steps", "4",
            "--db", f"sqlite:///{foreign}", "--out", str(tmp_path / "out")]  # fmt: skip
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "is not an ecad-search database" in lines[0] and "ecad_runs has no column" in lines[0]
    assert digest(foreign) == before and not (tmp_path / "out").exists()
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("shopping list\n" * 100)
    before = digest(not_sqlite)
    result = runner.invoke(app, ["runs", "--db", f"sqlite:///{not_sqlite}"])
    assert result.exit_code == 2 and "file is not a database" in result.output
    assert digest(not_sqlite) == before


def test_a_population_larger_than_the_mask_space_is_refused_not_a_hang(tmp_path, tiny_pixart_dir) -> None:  # type: ignore[no-untyped-def]
    from ecad_search import CacheSchedule
    from ecad_search.schedule import BlockGroup
    from ecad_search.search.seeding import initial_population

    tiny = CacheSchedule.all_compute((BlockGroup("transformer_blocks", 1, ("attn1",)),), 3)
    with pytest.raises(ValueError, match="exceeds the 4 distinct masks"):
        initial_population(tiny, 5, seed=0)
    assert len(initial_population(tiny, 4, seed=0)) == 4, "a population that fills the space still terminates"


def _status(db: Path) -> str | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as connection:
            row = connection.execute("SELECT status FROM ecad_runs").fetchone()
            evaluations = connection.execute("SELECT count(*) FROM ecad_evaluations").fetchone()[0]
    except sqlite3.OperationalError:
        return None
    return None if row is None else f"{row[0]}:{evaluations}"


@pytest.mark.parametrize("evaluations_before_signal", [0, 8], ids=["during-baselines", "during-generations"])
def test_sigterm_ends_the_run_as_interrupted_with_one_line(
    tmp_path, tiny_pixart_dir, evaluations_before_signal
) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue house\n")
    db = tmp_path / "t.db"
    args = ["--model", str(tiny_pixart_dir), "--metric", "fidelity", "--generations", "200", "--population", "6",
            "--steps", "4", "--prompts", str(prompts), "--db", f"sqlite:///{db}", "--out", str(tmp_path / "out"),
            "--run", "t"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ecad_search", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        status = _status(db)
        if status and int(status.split(":")[1]) >= evaluations_before_signal:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert errors == ["error: terminated (SIGTERM)"], stderr
    assert "re-run the same command to resume" in stdout
    assert _status(db).startswith("interrupted:"), stdout


def test_a_prompt_the_model_cannot_draw_fails_before_the_run_exists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a handwritten digit 3\na red cat\n")
    db = tmp_path / "d.db"
    args = ["--model", "digits", "--generations", "1", "--prompts", str(prompts), "--db", f"sqlite:///{db}",
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and "prompt 'a red cat' names no digit" in lines[-1], result.output
    assert not db.exists() and not (tmp_path / "out").exists()
