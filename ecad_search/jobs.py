"""A search as a Ray job on a cluster: submit it, read its logs, stop it.

The job's entrypoint is the ordinary search command; progress lives in the run's database (`status`), so a
stopped or failed job resubmitted with the same options resumes where it stopped. The entrypoint takes no GPU
(`entrypoint_num_gpus=0`), leaving every GPU to the workers it starts.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from .options import RAY_EXTRA

ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
# What a source checkout would otherwise upload with the package.
CHECKOUT_EXCLUDES = [".venv", "venv", "runs", "*.db", "docs", "tests", "__pycache__", "*.egg-info"]


class JobError(RuntimeError):
    """The job server cannot be reached or refuses the request; reported in one line."""


def client(address: str) -> Any:
    """A job client for the dashboard at `address` (needs `ray[default]` here and on the cluster)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:
        raise JobError(f"Ray jobs need Ray with its job client, which is not installed: {RAY_EXTRA}") from err
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise JobError(
            f"no Ray job server at {address}: start one with `ray start --head` ({_first_line(err)})"
        ) from err


def package_runtime_env() -> dict[str, Any]:
    """The package for the job: the installed package folder, or a source checkout's root (which holds the
    calibration prompts beside the package), without its virtual environment, runs and history."""
    package = Path(__file__).resolve().parent
    if (package / "calibration_prompts").is_dir():
        return {"py_modules": [str(package)]}
    return {"working_dir": str(package.parent), "excludes": CHECKOUT_EXCLUDES}


def entrypoint(search_args: list[str]) -> str:
    return shlex.join(["python", "-m", "ecad_search", *search_args])


def submit(address: str, search_args: list[str]) -> str:
    """Submit the search with these options as a job; returns its id."""
    jobs = client(address)
    # The job id is this command's output: Ray's notices (what it uploads) stay out of it.
    logging.disable(logging.WARNING)
    try:
        return str(
            jobs.submit_job(
                entrypoint=entrypoint(search_args),
                runtime_env=package_runtime_env(),
                entrypoint_num_gpus=0,
                entrypoint_num_cpus=0,
                metadata={"tool": "ecad-search"},
            )
        )
    except RuntimeError as err:
        raise JobError(f"the job server at {address} refused the job: {_first_line(err)}") from err
    finally:
        logging.disable(logging.NOTSET)


def logs(address: str, job_id: str) -> str:
    try:
        return str(client(address).get_job_logs(job_id))
    except RuntimeError as err:
        raise JobError(f"no logs for job {job_id} at {address}: {_first_line(err)}") from err


def stop(address: str, job_id: str) -> str:
    """Ask the job to stop; returns what happened in a few words (a job that already ended is left as it is)."""
    jobs = client(address)
    try:
        state = str(jobs.get_job_status(job_id))
        if state.rsplit(".", 1)[-1] in ENDED:
            return f"already ended ({state.rsplit('.', 1)[-1].lower()})"
        return "is stopping" if jobs.stop_job(job_id) else "was not running"
    except RuntimeError as err:
        raise JobError(f"cannot stop job {job_id} at {address}: {_first_line(err)}") from err


def _first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)[:300]
