"""The outbox and leases in the Store contract: every adapter (memory, SQLite, PostgreSQL) alike."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from facteur.bus.port import Message
from facteur.domain.events import NewEvent
from facteur.domain.runs import RunStatus
from facteur.errors import StoreError
from facteur.store.port import IngestEffects, IngestIds, RunUpdate, Store
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock


def message(n: int, *, key: str | None = "issue-7-planning", topic: str = "codex.execution") -> Message:
    return Message(
        topic=topic,
        value=f'{{"n":{n}}}'.encode(),
        key=key.encode() if key is not None else None,
        headers=(("content-type", b"application/json"), ("x-binary", bytes([0, 255, n % 256]))),
    )


async def test_enqueued_messages_come_back_in_order_with_keys_and_headers(
    store: Store, clock: FakeClock
) -> None:
    sent = [message(n) for n in range(5)] + [message(5, key=None), message(6, topic="codex.plan")]
    await store.enqueue(sent[:3])
    clock.advance(1)
    await store.enqueue(sent[3:])
    pending = await store.pending_outbox(limit=100)
    assert [entry.message for entry in pending] == sent
    assert [entry.id for entry in pending] == sorted(entry.id for entry in pending)
    assert pending[0].created_at == clock.now() - timedelta(seconds=1)
    assert [entry.message for entry in await store.pending_outbox(limit=2)] == sent[:2]
    after = pending[2].id
    assert [e.message for e in await store.pending_outbox(limit=2, after_id=after)] == sent[3:5]


async def test_published_messages_leave_the_backlog_and_are_pruned_later(
    store: Store, clock: FakeClock
) -> None:
    assert (await store.outbox_backlog()).count == 0
    assert (await store.outbox_backlog()).oldest_created_at is None
    first = clock.now()
    await store.enqueue([message(n) for n in range(4)])
    clock.advance(10)
    pending = await store.pending_outbox(limit=100)
    await store.mark_published([pending[0].id, pending[1].id], clock.now())
    backlog = await store.outbox_backlog()
    assert backlog.count == 2
    assert backlog.oldest_created_at == first
    assert [e.message for e in await store.pending_outbox(limit=100)] == [message(2), message(3)]

    assert await store.prune_outbox(published_before=clock.now()) == 0  # published at that very time
    clock.advance(60)
    assert await store.prune_outbox(published_before=clock.now()) == 2
    assert (await store.outbox_backlog()).count == 2  # unpublished messages are never pruned


async def test_a_run_update_and_its_messages_are_one_transaction(store: Store, clock: FakeClock) -> None:
    result = await store.ingest(make_ingest(clock))
    assert result.ids
    run_id = result.ids.run_id
    update = RunUpdate(status=RunStatus.SUBMITTED, expected=(RunStatus.QUEUED,))
    event = NewEvent(kind="run.submitted", actor="test", payload={}, run_id=run_id)
    assert await store.update_run(run_id, update, event, [message(1)]) is not None
    # not in an expected status any more: nothing written, messages included
    assert await store.update_run(run_id, update, event, [message(2)]) is None
    assert [e.message for e in await store.pending_outbox(limit=10)] == [message(1)]


async def test_an_ingest_publishes_its_messages_once(store: Store, clock: FakeClock) -> None:
    base = make_ingest(clock)

    def effects(ids: IngestIds) -> IngestEffects:
        return dataclasses.replace(base.effects(ids), messages=[message(1), message(2)])

    ingest = dataclasses.replace(base, effects=effects)
    results = await asyncio.gather(*(store.ingest(ingest) for _ in range(5)))
    assert sum(1 for r in results if not r.duplicate) == 1
    assert sorted(r.messages for r in results) == [0, 0, 0, 0, 2]
    assert [e.message for e in await store.pending_outbox(limit=10)] == [message(1), message(2)]


async def test_a_key_that_is_not_text_is_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(StoreError, match="UTF-8"):
        await store.enqueue([message(1), Message(topic="t", value=b"x", key=b"\xff\xfe")])
    assert await store.pending_outbox(limit=10) == []


async def test_a_lease_has_one_holder_until_it_expires(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    until = now + timedelta(seconds=15)
    assert await store.acquire_lease("outbox-relay", "a", now=now, until=until)
    assert not await store.acquire_lease("outbox-relay", "b", now=now, until=until)
    assert await store.acquire_lease("outbox-relay", "a", now=now, until=until)  # renewal
    assert await store.acquire_lease("other-duty", "b", now=now, until=until)
    later = now + timedelta(seconds=16)
    assert await store.acquire_lease("outbox-relay", "b", now=later, until=later + timedelta(seconds=15))
    assert not await store.acquire_lease("outbox-relay", "a", now=later, until=later + timedelta(seconds=15))


async def test_a_run_update_with_a_key_that_is_not_text_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    result = await store.ingest(make_ingest(clock))
    assert result.ids
    run_id = result.ids.run_id
    event = NewEvent(kind="run.failed", actor="test", payload={}, run_id=run_id)
    bad = Message(topic="t", value=b"x", key=b"\xff")
    with pytest.raises(StoreError, match="UTF-8"):
        await store.update_run(run_id, RunUpdate(status=RunStatus.FAILED), event, [bad])
    assert (await store.get_run(run_id)).status is RunStatus.QUEUED
    assert [e.kind for e in await store.list_events(run_id=run_id)] == ["test.ingested"]


async def test_the_outbox_listener_hears_writes_that_put_messages_only(
    store: Store, clock: FakeClock
) -> None:
    heard: list[int] = []
    store.on_outbox_write(lambda: heard.append(1))
    result = await store.ingest(make_ingest(clock))  # no messages
    assert result.ids
    assert heard == []
    update = RunUpdate(status=RunStatus.SUBMITTED, expected=(RunStatus.QUEUED,))
    await store.update_run(result.ids.run_id, update, None, [message(1)])
    assert heard == [1]
    await store.update_run(result.ids.run_id, update, None, [message(2)])  # not applied: nothing written
    await store.enqueue([])
    assert heard == [1]
    await store.enqueue([message(3)])
    assert heard == [1, 1]
