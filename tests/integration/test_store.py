"""The search store: resume, the shared evaluation memo, idempotent writes, exact floats, and clear URL errors."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from ecad_search.store import EvaluationRecord, FailureRecord, Store, StoreError
from ecad_search.store.claims import HOST
from ecad_search.store.rows import CHUNK_SIZE

KEY = "eval-key-a"
CONFIG: dict[str, Any] = {"model": "pixart", "metric": "clip", "population": 8, "seeds": [0, 1], "steps": 20}


def _record(genome: str, quality_loss: float = 0.5, cost: float = 1e12, **changes: Any) -> EvaluationRecord:
    fields: dict[str, Any] = {
        "digest": hashlib.sha256(genome.encode()).hexdigest(),
        "genome": genome,
        "quality_loss": quality_loss,
        "cost": cost,
        "macs": cost,
        "latency_s": 1.25,
        "scores": {"per_prompt": [0.25, 0.75], "extra": {"fid": 3.5}},
        "wall_time_s": 2.0,
    }
    fields.update(changes)
    return EvaluationRecord(**fields)


def _start(store: Store, name: str = "run-a", config: dict[str, Any] = CONFIG, eval_key: str = KEY):
    return store.start_run(name, config, eval_key, "pixart", "clip", 7, "0.1.0")


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


@pytest.fixture
def url(db_url: str) -> str:
    """Every store test runs on SQLite and on PostgreSQL (`db_url` in conftest)."""
    return db_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ecad.db'}"


def test_round_trip(url: str) -> None:
    with Store(url) as store:
        run = _start(store)
        assert (run.name, run.status, run.generations_done, run.config) == ("run-a", "running", 0, CONFIG)
        records = [_record("0110"), _record("1111", quality_loss=0.0, latency_s=None)]
        assert store.record_evaluations(KEY, records) == 2
    with Store(url) as store:
        found = store.lookup(KEY, [r.digest for r in records] + ["f" * 64])
        assert found == {r.digest: r for r in records}
        assert store.evaluations_for(KEY, [records[1].digest, "f" * 64, records[0].digest, records[1].digest]) == [
            records[1],
            records[0],
            records[1],
        ]
        assert store.count_evaluations(KEY) == 2
        assert store.count_evaluations("other") == 0


def test_tables_are_prefixed(url: str) -> None:
    Store(url).close()
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    assert names == {
        "ecad_runs", "ecad_candidates", "ecad_evaluations", "ecad_failures", "ecad_claims", "ecad_generations",
        "ecad_schema_version",
    }


def test_floats_round_trip_bit_exactly(url: str) -> None:
    values = [0.1 + 0.2, 1 / 3, 5.71379613696e12, 2.0**-1074, 1.7976931348623157e308, -2.5e-17, float("inf")]
    records = [_record(format(i, "08b"), quality_loss=v, cost=v, wall_time_s=v) for i, v in enumerate(values)]
    with Store(url) as store:
        _start(store)
        store.record_evaluations(KEY, records)
        store.record_generation("run-a", 0, [], [], 1 / 3, 0, 0, 0.1 + 0.2)
    with Store(url) as store:
        found = store.lookup(KEY, [r.digest for r in records])
        generation = store.generations("run-a")[0]
    for record, value in zip(records, values, strict=True):
        stored = found[record.digest]
        assert {_bits(stored.quality_loss), _bits(stored.cost), _bits(stored.wall_time_s)} == {_bits(value)}
    assert (_bits(generation.hypervolume), _bits(generation.wall_time_s)) == (_bits(1 / 3), _bits(0.1 + 0.2))


def test_resume_returns_the_same_run(url: str) -> None:
    with Store(url) as store:
        first = _start(store)
        store.record_generation("run-a", 0, ["a"], ["a"], 1.0, 1, 0, 1.0)
        store.set_status("run-a", "interrupted")
    with Store(url) as store:
        resumed = _start(store, config={**CONFIG})
        assert (resumed.created_at, resumed.generations_done, resumed.status) == (first.created_at, 1, "running")
        assert resumed.updated_at >= first.updated_at
        assert resumed.created_at.utcoffset() is not None
        assert len(store.list_runs()) == 1


def test_conflicting_config_is_a_one_line_error(url: str) -> None:
    with Store(url) as store:
        _start(store)
        with pytest.raises(StoreError, match=r"pick another `run` name") as info:
            _start(store, config={**CONFIG, "population": 16})
        assert "\n" not in str(info.value)
        assert "population" in str(info.value)
        with pytest.raises(StoreError, match="eval_key"):
            _start(store, eval_key="eval-key-b")
        assert store.get_run("run-a").config == CONFIG


def test_record_evaluations_is_idempotent(url: str) -> None:
    record = _record("0101")
    with Store(url) as store:
        assert store.record_evaluations(KEY, [record, record]) == 1
        assert store.record_evaluations(KEY, [_record("0101", quality_loss=9.0), _record("0011")]) == 1
        assert store.count_evaluations(KEY) == 2
        assert store.lookup(KEY, [record.digest])[record.digest] == record


def test_record_generation_is_idempotent(url: str) -> None:
    with Store(url) as store:
        _start(store)
        assert store.record_generation("run-a", 1, ["b", "a"], ["a"], 2.0, 4, 1, 3.0)
        assert store.record_generation("run-a", 0, ["a"], ["a"], 1.0, 4, 0, 3.0)
        assert not store.record_generation("run-a", 1, ["c"], ["c"], 9.0, 9, 9, 9.0)
        generations = store.generations("run-a")
        assert [g.index for g in generations] == [0, 1]
        assert (generations[1].population, generations[1].archive, generations[1].hypervolume) == (
            ("b", "a"),
            ("a",),
            2.0,
        )
        assert (generations[1].evaluated, generations[1].memo_hits) == (4, 1)
        assert store.get_run("run-a").generations_done == 2


def test_memo_is_shared_by_eval_key(url: str) -> None:
    with Store(url) as store:
        _start(store, "run-a")
        _start(store, "run-b", config={**CONFIG, "seed": 1})
        _start(store, "run-c", config={**CONFIG, "steps": 10}, eval_key="eval-key-b")
        record = _record("1100")
        store.record_evaluations(KEY, [record])
    with Store(url) as store:
        assert store.lookup(KEY, [record.digest]) == {record.digest: record}
        assert store.lookup("eval-key-b", [record.digest]) == {}
        other = _record("1100", quality_loss=0.9)
        assert store.record_evaluations("eval-key-b", [other]) == 1
        assert store.lookup("eval-key-b", [record.digest])[record.digest].quality_loss == 0.9
        assert store.lookup(KEY, [record.digest])[record.digest].quality_loss == 0.5


def test_lookup_many_digests_is_chunked(url: str) -> None:
    records = [_record(format(i, "011b")) for i in range(CHUNK_SIZE * 2 + 7)]
    with Store(url) as store:
        assert store.record_evaluations(KEY, records) == len(records)
        assert store.record_evaluations(KEY, records) == 0
        assert len(store.lookup(KEY, [r.digest for r in records])) == len(records)


def test_list_runs_order_and_fields(url: str) -> None:
    with Store(url) as store:
        for name in ("zeta", "alpha", "mid"):
            _start(store, name)
        store.set_status("alpha", "finished")
        runs = store.list_runs()
    assert [r.name for r in runs] == ["zeta", "alpha", "mid"]
    assert [r.status for r in runs] == ["running", "finished", "running"]
    first = runs[0]
    assert (first.eval_key, first.model, first.metric, first.seed, first.tool_version) == (
        KEY,
        "pixart",
        "clip",
        7,
        "0.1.0",
    )
    assert first.created_at <= runs[1].created_at


def test_unknown_run_and_status(url: str) -> None:
    with Store(url) as store:
        assert store.get_run("missing") is None
        with pytest.raises(StoreError, match="no run named"):
            store.record_generation("missing", 0, [], [], 0.0, 0, 0, 0.0)
        _start(store)
        with pytest.raises(StoreError, match="unknown run status"):
            store.set_status("run-a", "done")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quality_loss": float("nan")}, "NaN"),
        ({"genome": "01x1"}, "'0' and '1'"),
        ({"scores": {"per_prompt": [float("nan")]}}, "not plain JSON"),
        ({"genome": "", "policy": "[1]"}, "JSON object naming the policy"),
        ({"policy": '{"policy": "teacache", "knobs": {}}'}, "both a genome and a policy"),
    ],
)
def test_bad_records_write_nothing(url: str, change: dict[str, Any], message: str) -> None:
    with Store(url) as store:
        with pytest.raises(StoreError, match=message):
            store.record_evaluations(KEY, [_record("0000"), replace(_record("0001"), **change)])
        assert store.count_evaluations(KEY) == 0


def test_digest_must_keep_its_genome(url: str) -> None:
    record = _record("0110")
    with Store(url) as store:
        store.record_evaluations(KEY, [record])
        with pytest.raises(StoreError, match="stored as another candidate"):
            store.record_evaluations("eval-key-b", [_record("0111", digest=record.digest)])


def test_a_policy_is_a_candidate_beside_masks(url: str) -> None:
    document = '{"format":"ecad-search.policy","knobs":{"threshold":0.3},"policy":"teacache","version":1}'
    policy = _record("", cost=0.4, digest="ab" * 32, policy=document)
    with Store(url) as store:
        assert store.record_evaluations(KEY, [policy, _record("0110")]) == 2
        found = store.lookup(KEY, [policy.digest])[policy.digest]
        assert found == policy, "the policy document and every figure come back as stored"
        assert store.record_evaluations(KEY, [policy]) == 0, "the memo holds policies too"
        other = '{"format":"ecad-search.policy","knobs":{"threshold":0.5},"policy":"teacache","version":1}'
        with pytest.raises(StoreError, match="stored as another candidate"):
            store.record_evaluations("eval-key-b", [replace(policy, policy=other)])


@pytest.mark.parametrize(
    ("bad_url", "message"),
    [
        ("nonsense", "cannot parse database URL"),
        ("postgresql://u:secret@127.0.0.1:abc/db", "cannot parse database URL"),
        ("nosuchdb://host/db", "unknown database type"),
        ("sqlite:////definitely/not/here/x.db", "does not exist; create it first"),
        ("postgresql://u@127.0.0.1:1/db", "cannot open database 'postgresql://u@127.0.0.1:1/db'"),
    ],
)
def test_bad_urls_are_one_line_errors(bad_url: str, message: str) -> None:
    for check in (Store.validate_url, Store):
        with pytest.raises(StoreError, match=message) as info:
            check(bad_url)
        assert "\n" not in str(info.value)
        assert "secret" not in str(info.value)
    assert not Path("/definitely").exists()


def test_bad_sqlite_paths_create_nothing(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    for bad_url, message in [
        (f"sqlite:///{tmp_path / 'missing' / 'x.db'}", "does not exist"),
        (f"sqlite:///{tmp_path / 'folder'}", "is a folder"),
    ]:
        for check in (Store.validate_url, Store):
            with pytest.raises(StoreError, match=message):
                check(bad_url)
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
    assert not any((tmp_path / "folder").iterdir())


def test_validate_url_creates_nothing(tmp_path: Path) -> None:
    Store.validate_url(f"sqlite:///{tmp_path / 'new.db'}")
    Store.validate_url("sqlite://")
    assert not any(tmp_path.iterdir())


def test_in_memory_database() -> None:
    with Store("sqlite://") as store:
        _start(store)
        store.record_evaluations(KEY, [_record("01")])
        assert store.count_evaluations(KEY) == 1


def test_migrations_build_exactly_the_schema_the_code_uses(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from ecad_search.store.models import Base

    Store(url).close()
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert [d for d in differences if "ecad_schema_version" not in str(d)] == []


def test_a_database_from_before_migrations_is_upgraded_in_place(url: str) -> None:
    from sqlalchemy import text

    from ecad_search.store import migrations

    engine = create_engine(url)
    scripts = migrations._scripts()
    with (
        engine.begin() as connection,
        migrations.EnvironmentContext(
            migrations.Config(), scripts, fn=lambda rev, _: scripts._upgrade_revs("0001", rev), destination_rev="0001"
        ) as environment,
    ):
        environment.configure(connection=connection, version_table=migrations.VERSION_TABLE)
        with environment.begin_transaction():
            environment.run_migrations()
        connection.execute(text(f"DROP TABLE {migrations.VERSION_TABLE}"))
        connection.execute(
            text(
                "INSERT INTO ecad_runs (id, name, config, eval_key, model, metric, seed, status, generations_done, "
                "created_at, updated_at, tool_version) VALUES (1, 'old', '{}', 'k', 'digits', 'fidelity', 0, "
                "'finished', 1, '2026-11-01 00:00:00', '2026-11-01 00:00:00', '0.1.0')"
            )
        )
        connection.execute(
            text(
                'INSERT INTO ecad_generations (run_id, "index", population, archive, hypervolume, evaluated, '
                "memo_hits, wall_time_s, created_at) VALUES (1, 0, '[]', '[]', 0.5, 24, 0, 12.5, '2026-11-01 00:00:00')"
            )
        )
    columns = {c["name"] for c in inspect(engine).get_columns("ecad_generations")}
    assert "confirmed" not in columns
    with Store(url) as store:
        (generation,) = store.generations("old")
        assert (generation.evaluated, generation.wall_time_s, generation.confirmed) == (24, 12.5, 0)
    with engine.connect() as connection:
        assert migrations.stored_revision(connection) == migrations.head()
    engine.dispose()


def test_a_database_from_a_newer_version_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    url = sqlite_url
    Store(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE ecad_schema_version SET version_num = '9999'"))
    engine.dispose()
    before = (tmp_path / "ecad.db").read_bytes()
    with pytest.raises(StoreError, match="written by a newer ecad-search"):
        Store(url)
    with pytest.raises(StoreError, match="written by a newer ecad-search"):
        Store.validate_url(url)
    assert (tmp_path / "ecad.db").read_bytes() == before


def test_a_failure_is_stored_once(url: str) -> None:
    store = Store(url)
    failure = FailureRecord(_record("0110").digest, "0110", "its worker died", 3)
    store.record_failure(KEY, failure)
    store.record_failure(KEY, replace(failure, error="again", attempts=5))
    assert store.failures(KEY, [failure.digest, _record("1").digest]) == {failure.digest: failure}
    assert store.failures("other", [failure.digest]) == {}
    assert store.lookup(KEY, [failure.digest]) == {}


def test_claims_keep_drivers_apart_until_a_result_or_a_lapse(url: str) -> None:
    first, second = Store(url), Store(url)
    a, b, c = (_record(bits).digest for bits in ("01", "10", "11"))
    assert first.claim(KEY, [a, b]) == {a, b}
    assert second.claim(KEY, [a, b, c]) == {c}, "claimed masks are left to their holder"
    assert second.claim("other", [a]) == {a}, "claims are per evaluation settings"
    first.record_evaluations(KEY, [_record("01")])
    assert second.claim(KEY, [a]) == {a}, "recording a result releases its claim"
    first.release_claims(KEY, [b])
    assert second.claim(KEY, [b]) == {b}
    assert first.claim(KEY, [c], ttl_s=-1.0) == set()
    second.claim(KEY, [c], ttl_s=-1.0)
    assert first.claim(KEY, [c]) == {c}, "a lapsed claim is taken over"


def test_the_claims_of_a_dead_process_lapse_at_once(url: str) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = Store(url), Store(url)
    dead.holder = f"{HOST}:{int(gone.stdout)}:x"
    digest = _record("0101").digest
    assert dead.claim(KEY, [digest]) == {digest}
    assert alive.claim(KEY, [digest]) == {digest}
