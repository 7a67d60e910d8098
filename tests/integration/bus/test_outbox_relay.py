"""The outbox relay against a real Kafka-protocol broker that goes away while messages are being written."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from facteur.bus.kafka import KafkaBroker
from facteur.bus.port import Message, Received
from facteur.bus.relay import OutboxRelay
from facteur.clock import SystemClock
from facteur.settings import KafkaSettings, OutboxSettings
from facteur.store.sql import SqlStore
from tests.support.bus import consume, unique
from tests.support.kafka import KafkaServer

KEYS = 5


async def test_a_broker_outage_while_publishing_delays_every_message_and_loses_none(
    kafka: KafkaServer, tmp_path: Path
) -> None:
    topic = unique("outbox")
    clock = SystemClock()
    store = SqlStore.open(f"sqlite:///{tmp_path / 'f.db'}", clock=clock)
    await asyncio.to_thread(store.migrate)
    broker = KafkaBroker(KafkaSettings(brokers=[kafka.bootstrap], timeout_seconds=2.0))
    relay = OutboxRelay(
        store, broker, clock, OutboxSettings(batch_size=100, poll_seconds=0.2, max_backoff_seconds=0.5)
    )
    store.on_outbox_write(relay.wake)
    relaying = asyncio.create_task(relay.run())
    written = 0

    async def write(rounds: int) -> None:
        nonlocal written
        for _ in range(rounds):
            await store.enqueue(
                [
                    Message(topic=topic, value=str(n).encode(), key=f"run-{n % KEYS}".encode())
                    for n in range(written, written + 10)
                ]
            )
            written += 10
            await asyncio.sleep(0.02)

    try:
        await write(10)
        await asyncio.to_thread(kafka.stop)
        await write(10)  # accepted while the broker is down: they wait in the outbox
        async with asyncio.timeout(10):
            while relay.status().failures == 0:
                await asyncio.sleep(0.05)
        assert relay.status().problem is not None
        backlog = await store.outbox_backlog()
        assert backlog.count > 0
        await asyncio.to_thread(kafka.start)
        await write(10)
        async with asyncio.timeout(30):
            while (await store.outbox_backlog()).count:
                await asyncio.sleep(0.1)
        assert relay.status().problem is None

        applied: dict[int, int] = {}
        order: dict[bytes | None, list[int]] = {}

        async def apply_once(record: Received) -> None:  # an idempotent consumer, by message number
            number = int(record.value)
            if number in applied:
                applied[number] += 1
                return
            applied[number] = 1
            order.setdefault(record.key, []).append(number)

        group, received = unique("g"), []
        while len(applied) < written:  # duplicates count as received: read on until every number came
            received += await consume(
                broker, topic, group, written - len(applied), handler=apply_once, timeout=30
            )
    finally:
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await broker.close()
        await store.close()
    assert written == 300
    assert len(received) >= written  # at least once
    assert sorted(applied) == list(range(written))  # every message, each applied once
    for key, numbers in order.items():
        assert numbers == sorted(numbers), f"{key!r} out of order"
