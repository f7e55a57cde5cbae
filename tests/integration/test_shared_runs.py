"""Searches sharing one database, on SQLite and on PostgreSQL: two at once neither block nor corrupt each
other, never score the same mask twice, and end with the same archive."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, func, select

from ecad_search.store import Store
from ecad_search.store.models import Evaluation

DIGITS = "a handwritten digit 2\na handwritten digit 5\na handwritten digit 8\n"


def search(prompts: Path, db: str, out: Path, run: str) -> subprocess.Popen[str]:
    args = [
        "--model", "digits", "--generations", "2", "--population", "8", "--images-per-prompt", "2",
        "--held-out-images-per-prompt", "2", "--prompts", str(prompts), "--db", db, "--out", str(out), "--run", run,
    ]  # fmt: skip
    code = f"from ecad_search.cli import main; main({args!r})"
    # One thread each: two searches on two cores, neither starved.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def scored_now(output: str) -> int:
    """What one run scored itself: calibration (with the FORA baselines), confirmation and held-out images."""
    calibration, confirmation = map(int, re.search(r"(\d+) new evaluations .* (\d+) confirmed", output).groups())
    held_out = int(re.search(r"held out: \d+ schedules \((\d+) scored now\)", output).group(1))
    return calibration + confirmation + held_out


def test_two_searches_at_once_share_the_work_and_agree(db_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "digits.txt"
    prompts.write_text(DIGITS)
    runs = [search(prompts, db_url, tmp_path / "out", name) for name in ("a", "b")]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    engine = create_engine(db_url)
    with engine.connect() as connection:
        stored = connection.scalar(select(func.count()).select_from(Evaluation))
    engine.dispose()
    assert sum(scored_now(output) for output in outputs) == stored, "no mask was scored by both"
    store = Store(db_url)
    a, b = store.generations("a"), store.generations("b")
    assert [(g.population, g.archive) for g in a] == [(g.population, g.archive) for g in b]
    assert {store.get_run(name).status for name in ("a", "b")} == {"finished"}
