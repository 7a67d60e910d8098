"""The migrations produce exactly the schema of the table definitions, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from facteur.clock import SystemClock
from facteur.store.migrate import alembic_config, current_revision, head_revision
from facteur.store.sql import SqlStore, sqlalchemy_url
from facteur.store.tables import metadata
from tests.support.postgres import PostgresServer


def schema_differences(url: str) -> list[object]:
    engine = sa.create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def migrate(url: str) -> tuple[str | None, str]:
    store = SqlStore.open(url, clock=SystemClock())
    try:
        return store.migrate()
    finally:
        store.dispose()


def test_sqlite_migrations_match_the_tables(sqlite_url: str) -> None:
    assert migrate(sqlite_url) == (None, head_revision())
    assert schema_differences(sqlite_url) == []
    # a second run is a no-op
    assert migrate(sqlite_url) == (head_revision(), head_revision())


def test_postgres_migrations_match_the_tables(pg_server: PostgresServer) -> None:
    name = pg_server.new_database(template=None)
    url = pg_server.url(name)
    try:
        assert migrate(url) == (None, head_revision())
        assert schema_differences(url) == []
    finally:
        pg_server.drop_database(name)


def test_the_comparison_notices_a_difference(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN surprise TEXT")
    engine.dispose()
    differences = schema_differences(sqlite_url)
    assert any("surprise" in repr(d) for d in differences)


def test_downgrade_to_empty_and_back(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
        assert current_revision(conn) is None
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]
    engine.dispose()
    assert migrate(sqlite_url) == (None, head_revision())


def test_the_audit_chain_starts_at_genesis(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id, seq, hash FROM event_chain").all() == [(1, 0, "0" * 64)]
    engine.dispose()
