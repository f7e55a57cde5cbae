"""Shared test setup: offline mode, and tiny random-weight pipelines saved once per session.

PostgreSQL tests run where `ECAD_SEARCH_TEST_POSTGRES` names a server (CI starts one); each test gets a fresh
database on it, dropped afterwards. Without a server they are skipped with the command that starts one.

The environment variables are set at import, before any test module imports diffusers, transformers or ray,
so that nothing ever tries the network (the test machines have none), a local ray cluster needs no token, and
the user cache folder (cost tables) is a fresh one of this session's, never the user's own.
Each tiny pipeline is built and saved once per session; tests get a fresh copy loaded with the stock
`from_pretrained`, so they exercise the same loading path as a real checkpoint and cannot leak state
(hooks, patched modules, scheduler state) into one another.
"""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["ECAD_SEARCH_CACHE"] = tempfile.mkdtemp(prefix="ecad-search-cache-")

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline, PixArtAlphaPipeline
from sqlalchemy import create_engine, make_url, text

from ecad_search.generation import load_pipeline
from ecad_search.models import get_model
from ecad_search.testing import (
    TINY_FLUX_CALL_KWARGS,
    TINY_PIXART_CALL_KWARGS,
    save_tiny,
    tiny_flux_pipeline,
    tiny_pixart_pipeline,
)


def _quiet(pipe: DiffusionPipeline) -> DiffusionPipeline:
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny_pixart_pipeline(seed=0)` saved with `save_tiny`."""
    return save_tiny(tiny_pixart_pipeline(seed=0), tmp_path_factory.mktemp("tiny_pixart"))


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny_flux_pipeline(seed=0)` saved with `save_tiny`."""
    return save_tiny(tiny_flux_pipeline(seed=0), tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture
def tiny_pixart_pipe(tiny_pixart_dir: Path) -> PixArtAlphaPipeline:
    """A fresh PixArt-α pipeline loaded from `tiny_pixart_dir`; call it with `pixart_call_kwargs`."""
    return _quiet(PixArtAlphaPipeline.from_pretrained(tiny_pixart_dir))


@pytest.fixture
def tiny_flux_pipe(tiny_flux_dir: Path) -> FluxPipeline:
    """A fresh FLUX pipeline loaded from `tiny_flux_dir`; call it with `flux_call_kwargs`."""
    return _quiet(FluxPipeline.from_pretrained(tiny_flux_dir))


@pytest.fixture
def pixart_call_kwargs() -> dict[str, Any]:
    """A mutable copy of `TINY_PIXART_CALL_KWARGS`."""
    return dict(TINY_PIXART_CALL_KWARGS)


@pytest.fixture
def flux_call_kwargs() -> dict[str, Any]:
    """A mutable copy of `TINY_FLUX_CALL_KWARGS`."""
    return dict(TINY_FLUX_CALL_KWARGS)


# Denoising steps of the policy tests' runs.
POLICY_STEPS = 8


def pixart_call(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return pipe(["a red cat", "a blue house"], num_inference_steps=POLICY_STEPS, generator=generator,
                output_type="pt", guidance_scale=4.5, **kwargs).images  # fmt: skip


def digits_call(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    prompts = [f"a handwritten digit {d}" for d in range(10)]
    return pipe(prompts, num_inference_steps=POLICY_STEPS, generator=generator, output_type="pt").images


def flux_call(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return pipe("a red cat", num_inference_steps=POLICY_STEPS, generator=generator, output_type="pt", **kwargs).images


@pytest.fixture(params=["tiny-pixart", "tiny-flux", "digits"])
def policy_case(request: pytest.FixtureRequest) -> tuple[Any, Any, dict[str, Any], str]:
    """A pipeline of each kind the policies must run on, with how to call it (`POLICY_STEPS` steps, fixed
    seed) and the model name or folder: (pipe, call, call kwargs, model)."""
    if request.param == "digits":
        return load_pipeline(get_model("digits")), digits_call, {}, "digits"
    if request.param == "tiny-flux":
        pipe, kwargs = request.getfixturevalue("tiny_flux_pipe"), request.getfixturevalue("flux_call_kwargs")
        return pipe, flux_call, kwargs, str(request.getfixturevalue("tiny_flux_dir"))
    pipe, kwargs = request.getfixturevalue("tiny_pixart_pipe"), request.getfixturevalue("pixart_call_kwargs")
    return pipe, pixart_call, kwargs, str(request.getfixturevalue("tiny_pixart_dir"))


POSTGRES_VARIABLE = "ECAD_SEARCH_TEST_POSTGRES"
POSTGRES_HOW_TO = (
    f"no PostgreSQL server for the tests: run `export {POSTGRES_VARIABLE}=$(scripts/postgres_for_tests.sh)` "
    "(Debian: apt-get install postgresql first)"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty database on the test server (dropped after the test)."""
    server = os.environ.get(POSTGRES_VARIABLE)
    if not server:
        pytest.skip(POSTGRES_HOW_TO)
    name = f"ecad_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend: an SQLite file, and a PostgreSQL database where a server runs."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ecad.db'}"
    return request.getfixturevalue("postgres_url")


# Tests that start a local Ray cluster: each module of them, whole.
RAY_MODULES = {"test_workers.py", "test_jobs.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs a server: `ray` (a local Ray cluster), `postgres` (the PostgreSQL test server), so
    that `pytest -m "not ray"` and `pytest -m "not postgres"` select around them."""
    for item in items:
        if item.path.name in RAY_MODULES:
            item.add_marker(pytest.mark.ray)
        if "postgres_url" in getattr(item, "fixturenames", ()) or "postgresql" in item.name:
            item.add_marker(pytest.mark.postgres)
