"""A search submitted as a real Ray job to a local head (job server on loopback), watched through `status`
from the database until it finishes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecad_search.cli import app

runner = CliRunner()
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def job_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head with its job server on 127.0.0.1, stopped after the module."""
    dashboard = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    start = [
        RAY, "start", "--head", f"--port={free_port()}", "--num-cpus=2", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
    ]  # fmt: skip
    subprocess.run(start, check=True, capture_output=True, env=env, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def watch(db: str, run: str, until: str, timeout_s: float = 300) -> list[str]:
    """`status RUN` every half second until its row contains `until`; every output seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = runner.invoke(app, ["status", run, "--db", db])
        if status.exit_code == 0:
            seen.append(status.output)
            if until in status.output:
                break
        time.sleep(0.5)
    return seen


def test_a_job_is_watched_from_the_database_stopped_and_resumed(tmp_path, job_server) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "digits.txt"
    prompts.write_text("a handwritten digit 3\na handwritten digit 6\n")
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    search = [
        "--model", "digits", "--generations", "6", "--population", "8", "--images-per-prompt", "2",
        "--held-out-images-per-prompt", "2", "--prompts", str(prompts), "--db", db, "--out", str(tmp_path / "out"),
        "--run", "job",
    ]  # fmt: skip
    first = runner.invoke(app, ["submit", "--address", job_server, "--", *search])
    assert first.exit_code == 0, first.output
    job = first.output.strip()
    assert job.startswith("raysubmit_") and "\n" not in job
    assert "running" in watch(db, "job", " 1/6 ")[-1]
    stopped = runner.invoke(app, ["stop", job, "--address", job_server])
    assert stopped.exit_code == 0 and f"job {job} is stopping" in stopped.output
    assert "interrupted" in watch(db, "job", "interrupted", 60)[-1], "SIGTERM from Ray is recorded"
    again = runner.invoke(app, ["submit", "--address", job_server, "--", *search])
    assert again.exit_code == 0, again.output
    final = watch(db, "job", "finished")[-1]
    row = next(line for line in final.splitlines() if "finished" in line)
    assert " 6/6 " in row, final
    logs = runner.invoke(app, ["logs", again.output.strip(), "--address", job_server]).output
    assert "(from the database)" in logs, "the resubmitted job resumed the run"
    assert "run job: 6 generations" in logs
