"""Group commit on SQLite: operations share a transaction but succeed or fail alone."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from facteur.domain.runs import RunStatus
from facteur.errors import NotFound, StoreError
from facteur.store.port import RunUpdate
from facteur.store.sql import SqlStore
from facteur.store.writer import BatchWriter, SetOperation
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock


async def test_a_failing_operation_fails_alone_within_a_batch(tmp_path: Path, clock: FakeClock) -> None:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'f.db'}", clock=clock)
    await asyncio.to_thread(store.migrate)
    try:
        good = [store.ingest(make_ingest(clock, delivery_id=f"ok-{n}")) for n in range(20)]
        bad = [store.get_run(uuid.uuid4()), store.update_run(uuid.uuid4(), _update(), None)]
        results = await asyncio.gather(*good, *bad, return_exceptions=True)
        assert all(not isinstance(r, BaseException) for r in results[:20])
        assert all(isinstance(r, NotFound) for r in results[20:])
        assert len(await store.list_runs()) == 20
        assert [e.seq for e in await store.list_events()] == list(range(1, 21))
    finally:
        await store.close()


def _update() -> RunUpdate:
    return RunUpdate(status=RunStatus.FAILED)


def test_operations_in_one_batch_share_one_commit(tmp_path: Path) -> None:
    engine = _table_t(tmp_path / "w.db")
    commits: list[int] = []

    @sa.event.listens_for(engine, "commit")
    def _commit(_connection: sa.Connection) -> None:
        commits.append(1)

    gate = threading.Event()

    def blocker(_conn: sa.Connection) -> None:
        gate.wait(10)

    def insert(conn: sa.Connection, n: int) -> int:
        conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
        return n

    def broken(conn: sa.Connection) -> None:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # a duplicate key: this operation alone fails
        raise AssertionError("not reached")

    writer = BatchWriter(engine, lambda exc: StoreError(str(exc)))
    try:
        first = writer.submit(blocker)  # holds the writer so that the rest queue up into one batch
        futures = [writer.submit(insert, n) for n in range(1, 6)] + [writer.submit(broken)]
        gate.set()
        first.result(10)
        assert [f.result(10) for f in futures[:5]] == [1, 2, 3, 4, 5]
        with pytest.raises(StoreError, match="UNIQUE"):
            futures[5].result(10)
    finally:
        writer.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 5
    assert len(commits) <= 2  # the blocker's batch, then everything queued behind it
    engine.dispose()


def test_a_set_operation_runs_once_for_its_group_and_alone_when_it_fails(tmp_path: Path) -> None:
    engine = _table_t(tmp_path / "s.db")

    calls: list[int] = []

    def one(conn: sa.Connection, n: int) -> int:
        calls.append(1)
        conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
        return n * 10

    def many(conn: sa.Connection, items: list[tuple[int, ...]]) -> list[int]:
        calls.append(len(items))
        for (n,) in items:
            conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
        return [n * 10 for (n,) in items]

    inserts = SetOperation(one, many)
    gate = threading.Event()
    writer = BatchWriter(engine, lambda exc: StoreError(str(exc)))
    try:
        blocker = _hold(writer, gate)
        futures = [writer.submit(inserts, n) for n in range(1, 6)]
        gate.set()
        blocker.result(10)
        assert [f.result(10) for f in futures] == [10, 20, 30, 40, 50]
        assert calls == [5]  # one call of the set form for the five

        calls.clear()
        gate.clear()
        blocker = _hold(writer, gate)
        # 3 is already stored: the set fails, then each runs alone and only 3 fails
        futures = [writer.submit(inserts, n) for n in (6, 3, 7)]
        gate.set()
        blocker.result(10)
        assert futures[0].result(10) == 60
        with pytest.raises(StoreError, match="UNIQUE"):
            futures[1].result(10)
        assert futures[2].result(10) == 70
        assert calls == [3, 1, 1, 1]
    finally:
        writer.close()
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT n FROM t ORDER BY n")] == [1, 2, 3, 4, 5, 6, 7]
    engine.dispose()


def test_a_set_form_that_breaks_its_promise_costs_time_not_results(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    calls: list[str] = []

    def one(_conn: sa.Connection, n: int) -> int:
        calls.append("one")
        return n

    def wrong_count(_conn: sa.Connection, items: list[tuple[int, ...]]) -> list[int]:
        calls.append("many")
        return []  # fewer results than operations: a bug in a set form

    gate = threading.Event()
    writer = BatchWriter(engine, lambda exc: StoreError(str(exc)))
    try:
        blocker = _hold(writer, gate)
        broken = SetOperation(one, wrong_count)
        futures = [writer.submit(broken, n) for n in range(3)]
        gate.set()
        blocker.result(10)
        assert [f.result(10) for f in futures] == [0, 1, 2]
        assert calls == ["many", "one", "one", "one"]
        assert writer.submit(lambda _conn: "still writing").result(10) == "still writing"
    finally:
        writer.close()
    engine.dispose()


def _hold(writer: BatchWriter, gate: threading.Event) -> Future[object]:
    """Occupy the writer until ``gate`` is set, so that what is submitted meanwhile forms one batch."""
    started = threading.Event()

    def hold(_conn: sa.Connection) -> bool:
        started.set()
        return gate.wait(10)

    future = writer.submit(hold)
    assert started.wait(10)
    return future


def test_a_failing_commit_fails_the_batch_once_and_is_never_run_again(tmp_path: Path) -> None:
    """The server may have committed: running the batch again could apply it twice."""
    engine = _table_t(tmp_path / "c.db")

    real_commit = engine.dialect.do_commit
    commits: list[int] = []

    def commit_then_fail(dbapi_connection: Any) -> None:
        real_commit(dbapi_connection)
        commits.append(1)
        if len(commits) == 2:
            raise sa_exc.OperationalError("COMMIT", {}, Exception("connection lost during commit"))

    engine.dialect.do_commit = commit_then_fail  # type: ignore[method-assign]

    def insert(conn: sa.Connection, n: int) -> int:
        conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
        return n

    gate = threading.Event()
    writer = BatchWriter(engine, lambda exc: StoreError(str(exc)))
    try:
        blocker = _hold(writer, gate)
        futures = [writer.submit(insert, n) for n in range(1, 4)]
        gate.set()
        blocker.result(10)
        for future in futures:
            with pytest.raises(StoreError, match="connection lost during commit"):
                future.result(10)
        assert writer.submit(insert, 10).result(10) == 10
    finally:
        writer.close()
    assert len(commits) == 3  # the blocker's batch, the failed batch (run once), the last insert
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT n FROM t ORDER BY n")] == [1, 2, 3, 10]
    engine.dispose()


def test_a_closed_writer_refuses_work_instead_of_leaving_it_waiting(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'z.db'}")
    writer = BatchWriter(engine, lambda exc: StoreError(str(exc)), closed=lambda: StoreError("closed"))
    assert writer.submit(lambda _conn: 1).result(10) == 1
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        writer.submit(lambda _conn: 2)
    engine.dispose()


def test_an_operation_raising_a_base_exception_does_not_stop_the_writer(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'k.db'}")

    def cancelled(_conn: sa.Connection) -> None:
        raise asyncio.CancelledError

    writer = BatchWriter(engine, lambda exc: StoreError(str(exc)))
    try:
        with pytest.raises(asyncio.CancelledError):
            writer.submit(cancelled).result(10)
        assert writer.submit(lambda _conn: "alive").result(10) == "alive"
    finally:
        writer.close()
    engine.dispose()


def _table_t(path: Path) -> sa.Engine:
    """A SQLite engine that begins as the store's writer does, over a database with one table ``t(n)``."""
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"isolation_level": None})

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    return engine
