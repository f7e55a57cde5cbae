"""Opening a store from a SQLAlchemy URL: checked before anything is created, with one-line errors that say
what to install or fix, and a bounded wait for a server that does not answer."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from . import migrations
from .models import Base
from .records import StoreError

# Seconds to wait for a database server: an unreachable host must fail fast, not hang the CLI.
CONNECT_TIMEOUT_S = 10
_TIMEOUT_ARG = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
}

_INSTALL_HINT = {
    "psycopg2": "pip install psycopg2-binary, or use 'postgresql+psycopg://' with psycopg 3",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
    "pymysql": "pip install pymysql",
    "mysqldb": "pip install mysqlclient",
}


def checked_url(url: str) -> tuple[URL, type[Dialect]]:
    """Parse `url` and check its driver and (for SQLite) its path, without connecting or creating anything."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(
            f"cannot parse database URL {redact(url)!r}; use e.g. 'sqlite:///ecad.db' or "
            "'postgresql+psycopg://user@host/dbname'"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError as exc:
        raise StoreError(
            f"cannot open database {shown!r}: unknown database type '{parsed.drivername}'; "
            "use a SQLAlchemy URL such as 'sqlite:///ecad.db'"
        ) from exc
    if dialect.is_async:
        raise StoreError(
            f"cannot open database {shown!r}: async driver '{dialect.driver}' is not supported; "
            f"use a synchronous one, e.g. '{dialect.name}://'"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = _INSTALL_HINT.get(dialect.driver, f"install the Python package of driver '{dialect.driver}'")
        raise StoreError(f"cannot open database {shown!r}: driver '{dialect.driver}' is not installed; {hint}") from exc
    if dialect.name == "sqlite":
        _check_sqlite_path(parsed, shown)
    return parsed, dialect


def _check_sqlite_path(url: URL, shown: str) -> None:
    """SQLite creates the file but not its folder: check the folder here so that the error says what to do."""
    path = sqlite_file(url)
    if path is None:
        return
    if path.is_dir():
        raise StoreError(f"cannot open database {shown!r}: '{path}' is a folder; give a file path")
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open database {shown!r}: folder '{path.parent}' does not exist; create it first "
            "(the store does not create folders)"
        )


def sqlite_file(url: URL) -> Path | None:
    """The file of an SQLite URL; None for in-memory and URI databases."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("uri") in ("true", "1"):
        return None
    return Path(database)


def sqlite_exists(url: URL) -> bool:
    path = sqlite_file(url)
    return path is None or path.exists()


def check_sqlite_file(url: URL, shown: str) -> None:
    """An existing SQLite file must be a database whose `ecad_` tables are ours; read-only, so it stays as it is."""
    path = sqlite_file(url)
    if path is None or not path.exists():
        return
    path = path.resolve()
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True))
    try:
        check_own_tables(engine, shown)
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise StoreError(f"cannot open database {shown!r}: {reason}; give the path of an SQLite database file") from exc
    finally:
        engine.dispose()


def check_own_tables(engine: Engine, shown: str) -> bool:
    """Refuse a database whose tables carry our names but not our columns (another tool's, or damaged), or
    whose schema revision is newer than this version knows. Returns whether our tables are there.

    Other tables are fine (one database can be shared with Optuna and others), and so is a database with
    none of ours yet; but either all our tables are there, each with the columns every version had (a
    column added by a later revision is nullable or has a default, and a table added later says so in its
    `info`, so older databases may lack them), or none.
    """
    inspector = inspect(engine)
    present = set(inspector.get_table_names())
    if migrations.VERSION_TABLE in present:
        with engine.connect() as connection:
            revision = migrations.stored_revision(connection)
        if revision is not None and not migrations.known(revision):
            raise StoreError(
                f"database {shown!r} was written by a newer ecad-search (schema revision {revision}); upgrade "
                "ecad-search to use it"
            )
    ours = Base.metadata.sorted_tables
    found = [table for table in ours if table.name in present]
    if not found:
        return False
    problem = ""
    for table in found:
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        required = [c.name for c in table.columns if not c.nullable and c.server_default is None]
        missing = sorted(name for name in required if name not in columns)
        if missing:
            problem = f"its table {table.name} has no column {', '.join(missing[:4])}"
            break
    absent = [table.name for table in ours if table.name not in present and "added_in" not in table.info]
    if not problem and absent:
        problem = f"it has {found[0].name} but no {absent[0]}"
    if not problem:
        return True
    raise StoreError(
        f"database {shown!r} is not an ecad-search database ({problem}); nothing was written to it: "
        "give another `db`, e.g. sqlite:///ecad-search.db"
    )


def engine_for(url: URL, dialect: type[Dialect]) -> Engine:
    timeout_arg = _TIMEOUT_ARG.get(dialect.driver)
    connect_args = {timeout_arg: CONNECT_TIMEOUT_S} if timeout_arg and timeout_arg not in url.query else {}
    # A long search may idle for hours between generations: ping server connections before reuse.
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=dialect.name != "sqlite")
    if dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_error(shown: str, dialect: type[Dialect], exc: SQLAlchemyError) -> StoreError:
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300].rstrip(".")
    if dialect.name == "sqlite":
        fix = "check the path is a writable SQLite database file"
    else:
        fix = "check the server is running and the URL's host, port, user, password and database name"
    return StoreError(f"cannot open database {shown!r}: {reason}; {fix}")


def redact(url: str) -> str:
    """Hide a password in a URL that could not be parsed, so it never reaches an error message or log."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
