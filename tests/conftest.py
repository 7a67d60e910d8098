"""Shared fixtures: fake time and ids, stores of every kind, the embedded PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from facteur.clock import SystemClock
from facteur.store.memory import MemoryStore
from facteur.store.port import Store
from facteur.store.sql import SqlStore
from tests.support.fakes import FakeClock, SequentialIds
from tests.support.kafka import KafkaServer, KafkaUnavailable, start_kafka
from tests.support.postgres import TEMPLATE, PostgresServer, PostgresUnavailable, start_postgres
from tests.support.services import unavailable


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ids() -> SequentialIds:
    return SequentialIds()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        unavailable(f"embedded PostgreSQL could not start: {exc}")
    try:
        server.execute(f"CREATE DATABASE {TEMPLATE}")
        store = SqlStore.open(server.url(TEMPLATE), clock=SystemClock())
        store.migrate()
        store.dispose()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = pg_server.new_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'facteur.db'}"


STORE_KINDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store adapter in turn, migrated and empty."""
    kind: str = request.param
    opened: Store
    if kind == "memory":
        opened = MemoryStore(clock)
    else:
        url = request.getfixturevalue("pg_url") if kind == "postgres" else f"sqlite:///{tmp_path / 'f.db'}"
        sql_store = SqlStore.open(url, clock=clock, pool_size=8)
        await asyncio.to_thread(sql_store.migrate)
        opened = sql_store
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaServer]:
    """One Kafka-protocol broker (noida-db) for the session; tests use their own topics and groups."""
    try:
        server = start_kafka()
    except KafkaUnavailable as exc:
        unavailable(f"the Kafka test broker (noida-db) could not start: {exc}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def kafka(kafka_server: KafkaServer) -> KafkaServer:
    """The session broker, running (started again if an earlier test stopped it)."""
    if not kafka_server.running:
        try:
            kafka_server.start()
        except KafkaUnavailable as exc:
            unavailable(f"the Kafka test broker (noida-db) could not restart: {exc}")
    return kafka_server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A migrated-on-start database URL: SQLite, then PostgreSQL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return sqlite_url
