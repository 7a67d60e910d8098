"""The PostgreSQL writer among other processes: no deadlocks between writers, and a lost connection."""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
import pytest

from facteur.domain.events import verify_chain
from facteur.errors import StoreUnavailable
from facteur.store.port import IngestResult
from facteur.store.sql import SqlStore
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock

pytestmark = pytest.mark.postgres


async def test_two_writers_taking_the_same_rows_in_opposite_orders_never_deadlock(
    pg_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each batch locks the audit chain's head before any row, so batches of different processes (here two
    stores) serialise on it instead of waiting for each other's rows."""
    caplog.set_level(logging.DEBUG, logger="facteur.store.writer")
    first = SqlStore.open(pg_url, clock=clock, pool_size=3)
    second = SqlStore.open(pg_url, clock=clock, pool_size=3)
    try:
        for round_ in range(8):
            refs = [f"acme/widgets#{n}" for n in range(4)]
            ids = [f"r{round_}-d{n}" for n in range(4)]
            forward = [
                first.ingest(make_ingest(clock, delivery_id=d, source_ref=r))
                for d, r in zip(ids, refs, strict=True)
            ]
            backward = [
                second.ingest(make_ingest(clock, delivery_id=d, source_ref=r))
                for d, r in zip(reversed(ids), reversed(refs), strict=True)
            ]
            outcomes = await asyncio.gather(*forward, *backward, return_exceptions=True)
            assert all(isinstance(o, IngestResult) for o in outcomes), outcomes
            assert sum(1 for o in outcomes if isinstance(o, IngestResult) and not o.duplicate) == 4
        assert "deadlock" not in caplog.text.lower()
        events = await first.list_events()
        assert verify_chain(events) is None
        assert len(events) == 8 * 4
    finally:
        await first.close()
        await second.close()


async def test_a_write_after_the_server_dropped_the_connection_succeeds(
    pg_url: str, clock: FakeClock
) -> None:
    store = SqlStore.open(pg_url, clock=clock, pool_size=2)
    try:
        assert not (await store.ingest(make_ingest(clock, delivery_id="before"))).duplicate
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        # no pause: the writer does not check its connection before this batch, it finds it lost and
        # runs the batch again on a new one
        after = await store.ingest(make_ingest(clock, delivery_id="after"))
        assert not after.duplicate
        assert {r.delivery_id for r in await store.list_runs()} == {"before", "after"}
    finally:
        await store.close()


async def test_a_lock_held_elsewhere_fails_writes_in_bounded_time_then_they_work(
    pg_url: str, clock: FakeClock
) -> None:
    store = SqlStore.open(pg_url, clock=clock, pool_size=2, timeout=1.0)
    try:
        with psycopg.connect(pg_url) as other:  # an open transaction holding the audit chain's head
            other.execute("SELECT seq FROM event_chain WHERE id = 1 FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="lock"):
                await store.ingest(make_ingest(clock, delivery_id="blocked"))
            assert time.monotonic() - started < 5
            other.rollback()
        assert not (await store.ingest(make_ingest(clock, delivery_id="blocked"))).duplicate
    finally:
        await store.close()
