"""The outbox relay over the in-memory store and broker: order, outages, leases, pruning, wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from facteur.bus.memory import MemoryBroker
from facteur.bus.port import Message
from facteur.bus.relay import OutboxRelay
from facteur.settings import OutboxSettings
from facteur.store.memory import MemoryStore
from tests.support.fakes import FakeClock

FAST = OutboxSettings(batch_size=50, poll_seconds=5.0, lease_seconds=15.0, max_backoff_seconds=0.2)


def messages(count: int, *, keys: int = 3, start: int = 0) -> list[Message]:
    return [
        Message(topic="codex.execution", value=f"{n}".encode(), key=f"run-{n % keys}".encode())
        for n in range(start, start + count)
    ]


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def by_key(broker: MemoryBroker) -> dict[bytes | None, list[bytes]]:
    seen: dict[bytes | None, list[bytes]] = {}
    for record in broker.records("codex.execution"):
        seen.setdefault(record.key, []).append(record.value)
    return seen


async def test_messages_are_published_in_order_per_key_and_marked(clock: FakeClock) -> None:
    store, broker = MemoryStore(clock), MemoryBroker()
    relay = OutboxRelay(store, broker, clock, FAST, holder="a")
    store.on_outbox_write(relay.wake)
    sent = messages(120)
    async with running(relay):
        await store.enqueue(sent[:70])
        await store.enqueue(sent[70:])
        await until(lambda: len(broker.records("codex.execution")) == 120)
        await until(lambda: not store.outbox or all(i.published_at for i in store.outbox))
        assert (await relay.refresh_backlog()).count == 0
    expected: dict[bytes | None, list[bytes]] = {}
    for m in sent:
        expected.setdefault(m.key, []).append(m.value)
    assert by_key(broker) == expected
    assert await store.pending_outbox(limit=10) == []
    status = relay.status()
    assert (status.published, status.failures, status.problem, status.leading) == (120, 0, None, True)


async def test_a_write_wakes_the_relay_without_waiting_for_the_poll(clock: FakeClock) -> None:
    store, broker = MemoryStore(clock), MemoryBroker()
    relay = OutboxRelay(store, broker, clock, OutboxSettings(poll_seconds=60.0), holder="a")
    store.on_outbox_write(relay.wake)
    async with running(relay):
        await asyncio.sleep(0.05)  # the relay is idle, waiting up to 60 s
        await store.enqueue(messages(1))
        await until(lambda: len(broker.records("codex.execution")) == 1, timeout=2.0)


async def test_an_outage_delays_messages_and_loses_none(clock: FakeClock) -> None:
    store, broker = MemoryStore(clock), MemoryBroker()
    relay = OutboxRelay(store, broker, clock, FAST, holder="a")
    store.on_outbox_write(relay.wake)
    async with running(relay):
        await store.enqueue(messages(10))
        await until(lambda: len(broker.records("codex.execution")) == 10)
        broker.outage("brokers unreachable")
        await store.enqueue(messages(25, start=10))
        await until(lambda: relay.status().failures >= 2)
        status = relay.status()
        assert status.problem is not None and "brokers unreachable" in status.problem
        assert status.backlog == 25
        assert len(broker.records("codex.execution")) == 10
        broker.outage(None)
        await until(lambda: len(broker.records("codex.execution")) == 35)
        await until(lambda: relay.status().problem is None)
    assert sorted(int(r.value) for r in broker.records("codex.execution")) == list(range(35))
    for values in by_key(broker).values():
        assert [int(v) for v in values] == sorted(int(v) for v in values)


async def test_one_relay_publishes_and_another_takes_over_when_its_lease_expires(clock: FakeClock) -> None:
    store, broker = MemoryStore(clock), MemoryBroker()
    first = OutboxRelay(store, broker, clock, FAST, holder="first")
    second = OutboxRelay(store, broker, clock, FAST, holder="second")
    await store.enqueue(messages(5))
    assert await first.relay_once() == 5
    await store.enqueue(messages(5, start=5))
    assert await second.relay_once() == 0  # the first holds the lease
    assert not second.status().leading
    clock.advance(FAST.lease_seconds + 1)  # the first stopped renewing it
    assert await second.relay_once() == 5
    assert second.status().leading
    assert not first.status().leading
    await store.enqueue(messages(1, start=10))
    assert await first.relay_once() == 0
    assert sorted(int(r.value) for r in broker.records("codex.execution")) == list(range(10))


async def test_published_messages_are_pruned_after_the_retention(clock: FakeClock) -> None:
    store, broker = MemoryStore(clock), MemoryBroker()
    relay = OutboxRelay(store, broker, clock, OutboxSettings(retention_hours=1.0), holder="a")
    await store.enqueue(messages(4))
    assert await relay.relay_once() == 4
    assert len(store.outbox) == 4
    clock.advance(2 * 3600)
    await relay.relay_once()  # renews the lease
    await relay.prune_if_due()
    assert store.outbox == []


@pytest.mark.parametrize("bad", [0, -1])
def test_settings_refuse_nonsense(bad: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        OutboxSettings(batch_size=bad)


async def test_a_long_backlog_is_published_once_while_batches_are_marked_behind(clock: FakeClock) -> None:
    """Marking a batch overlaps reading and publishing the next; the next read skips the batch being
    marked, so nothing is published twice and the order stays the outbox's."""
    store, broker = MemoryStore(clock), MemoryBroker(partitions=1)
    await store.enqueue(messages(1_000))
    relay = OutboxRelay(store, broker, clock, FAST, holder="a")
    async with running(relay):
        await until(lambda: all(i.published_at for i in store.outbox))
    assert [int(r.value) for r in broker.records("codex.execution")] == list(range(1_000))
    assert relay.status().published == 1_000
