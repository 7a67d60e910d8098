"""``facteur serve`` with ``bus.consume_codex_tasks``: the runtime ingests tasks from the bus."""

from __future__ import annotations

import asyncio

import pytest

from facteur import runtime as runtime_module
from facteur.bus.memory import MemoryBroker
from facteur.bus.port import Message
from facteur.executors.none import NoneExecutor
from facteur.runtime import Runtime, build_runtime
from facteur.settings import BusSettings, Settings
from facteur.store.memory import MemoryStore
from tests.support.bus import canary_bytes
from tests.support.fakes import FakeClock, SequentialIds

TOPIC = "github.issues.codex.tasks"


async def started(clock: FakeClock, ids: SequentialIds, broker: MemoryBroker, *, consume: bool) -> Runtime:
    settings = Settings(bus=BusSettings(consume_codex_tasks=consume))
    runtime = await build_runtime(
        settings, clock=clock, ids=ids, store=MemoryStore(clock), executor=NoneExecutor(), broker=broker
    )
    await runtime.start()
    return runtime


async def wait_for_delivery(runtime: Runtime, delivery_id: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while await runtime.store.find_delivery("codex_task", delivery_id) is None:
            await asyncio.sleep(0.01)


def canary() -> Message:
    return Message(TOPIC, canary_bytes(), key=b"issue-999-planning")


async def test_tasks_on_the_bus_are_ingested_and_committed(clock: FakeClock, ids: SequentialIds) -> None:
    broker = MemoryBroker()
    runtime = await started(clock, ids, broker, consume=True)
    try:
        await broker.publish([canary(), Message(TOPIC, b"\xff", key=b"bad")])
        await wait_for_delivery(runtime, "dry-run-0001")
        async with asyncio.timeout(5):
            while sum(broker.committed(TOPIC, "facteur-codex-listener").values()) < 2:
                await asyncio.sleep(0.01)
    finally:
        await runtime.close()
    [run] = await runtime.store.list_runs()
    assert run.delivery_id == "dry-run-0001"
    assert [r.key for r in broker.records(f"{TOPIC}.dlq")] == [b"bad"]


async def test_the_consumer_starts_over_after_the_store_failed(
    clock: FakeClock, ids: SequentialIds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "CONSUMER_RETRY_SECONDS", 0.05)
    broker = MemoryBroker()
    runtime = await started(clock, ids, broker, consume=True)
    store = runtime.store
    assert isinstance(store, MemoryStore)
    try:
        store.unavailable = True
        await broker.publish([canary()])
        await asyncio.sleep(0.2)  # the consumer failed on it, at least once
        assert broker.committed(TOPIC, "facteur-codex-listener") == {}
        store.unavailable = False
        await wait_for_delivery(runtime, "dry-run-0001")
    finally:
        await runtime.close()


async def test_no_consumer_unless_asked(clock: FakeClock, ids: SequentialIds) -> None:
    broker = MemoryBroker()
    runtime = await started(clock, ids, broker, consume=False)
    try:
        await broker.publish([canary()])
        await asyncio.sleep(0.1)
        assert await runtime.store.find_delivery("codex_task", "dry-run-0001") is None
    finally:
        await runtime.close()
