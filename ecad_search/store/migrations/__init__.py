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
from sqlalchemy import Connection, Engine, inspect

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


def upgrade(engine: Engine, has_tables: bool, destination: str = "head") -> None:
    """Bring the database to the newest revision (or to `destination`) in one transaction."""
    scripts = _scripts()
    with engine.begin() as connection:
        if has_tables and not inspect(connection).has_table(VERSION_TABLE):
            _context(connection).stamp(scripts, FIRST_REVISION)

        def steps(revision: object, context: object) -> list:
            return scripts._upgrade_revs(destination, revision)

        with EnvironmentContext(Config(), scripts, fn=steps, destination_rev=destination) as environment:
            environment.configure(connection=connection, version_table=VERSION_TABLE)
            with environment.begin_transaction():
                environment.run_migrations()
