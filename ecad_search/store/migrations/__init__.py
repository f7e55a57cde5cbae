"""Alembic migrations of the search store, run in code by `Store` (no alembic.ini, no env.py).

A new database is built by running every revision; a database written before migrations existed (our four
tables, no `ecad_schema_version`) is stamped as revision 0001, the schema it has, and upgraded from there. A
database stamped with a revision this version does not know was written by a newer ecad-search and is
refused rather than guessed at.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

FIRST_REVISION = "0001"
# Not alembic's default `alembic_version`: Optuna keeps its own schema revision there, in a database we share.
VERSION_TABLE = "ecad_schema_version"


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    return ScriptDirectory.from_config(config)


def head() -> str:
    return _scripts().get_current_head() or FIRST_REVISION


def stored_revision(connection: Connection) -> str | None:
    """The revision a database is stamped with, or None (new, or written before migrations existed)."""
    return _context(connection).get_current_revision()


def known(revision: str) -> bool:
    return revision in {script.revision for script in _scripts().walk_revisions()}


def _context(connection: Connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


# The advisory lock's key on PostgreSQL: any fixed number; this one spells "ecad".
MIGRATION_LOCK = 0x65636164


def upgrade(engine: Engine, has_tables: bool, destination: str = "head") -> None:
    """Bring the database to the newest revision (or to `destination`) in one transaction.

    Two searches opening a new database at once migrate it one after the other, and the second finds it at
    the newest revision: on PostgreSQL the transaction first takes an advisory lock; on SQLite it takes the
    file's write lock first (BEGIN IMMEDIATE), since the driver would otherwise run each CREATE TABLE on its
    own and let the other search see half a schema.
    """
    scripts = _scripts()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        if has_tables and not inspect(connection).has_table(VERSION_TABLE):
            _context(connection).stamp(scripts, FIRST_REVISION)

        def steps(revision: object, context: object) -> list:
            return scripts._upgrade_revs(destination, revision)

        with EnvironmentContext(Config(), scripts, fn=steps, destination_rev=destination) as environment:
            environment.configure(connection=connection, version_table=VERSION_TABLE)
            with environment.begin_transaction():
                environment.run_migrations()
