"""What the in-process broker does beyond the shared contract: partitions, wake-ups, groups, outages."""

from __future__ import annotations

import asyncio

import pytest

from facteur.bus.memory import MemoryBroker
from facteur.bus.port import Handler, Message, Received
from facteur.errors import BusUnavailable
from tests.support.bus import consume


def test_a_key_always_maps_to_one_partition_and_keys_spread() -> None:
    broker = MemoryBroker(partitions=3)
    keys = [f"issue-{n}-planning".encode() for n in range(30)]
    assert [broker.partition_for(k) for k in keys] == [broker.partition_for(k) for k in keys]
    assert {broker.partition_for(k) for k in keys} == {0, 1, 2}
    assert {broker.partition_for(None) for _ in range(3)} == {0, 1, 2}  # keyless: round-robin


async def test_a_waiting_consumer_wakes_up_on_publish() -> None:
    broker = MemoryBroker()
    waiting = asyncio.create_task(consume(broker, "t", "g", 1, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await broker.publish([Message("t", b"hello")])
    [record] = await asyncio.wait_for(waiting, 1)
    assert record.value == b"hello"


async def test_members_of_a_group_share_the_partitions() -> None:
    broker = MemoryBroker(partitions=3)
    first, second = broker.consumer("t", "g"), broker.consumer("t", "g")
    await first.start()
    await second.start()
    keys = [f"k{n}".encode() for n in range(12)]
    await broker.publish([Message("t", key, key=key) for key in keys])
    got: dict[str, list[Received]] = {"first": [], "second": []}

    def collector(name: str) -> Handler:
        async def collect(record: Received) -> None:
            got[name].append(record)
            if len(got["first"]) + len(got["second"]) == len(keys):
                await first.stop()
                await second.stop()

        return collect

    await asyncio.wait_for(
        asyncio.gather(first.run(collector("first")), second.run(collector("second"))),
        5,
    )
    partitions = {name: {r.partition for r in records} for name, records in got.items()}
    assert partitions["first"].isdisjoint(partitions["second"])
    assert partitions["first"] | partitions["second"] == {0, 1, 2}
    assert sorted(r.value for r in got["first"] + got["second"]) == sorted(keys)


async def test_latest_start_skips_what_was_published_before_the_group_existed() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.publish([Message("t", b"old")])
    consumer = broker.consumer("t", "g", start_at="latest")
    await consumer.start()
    seen: list[bytes] = []

    async def collect(record: Received) -> None:
        seen.append(record.value)
        await consumer.stop()

    runner = asyncio.create_task(consumer.run(collect))
    await asyncio.sleep(0.01)
    await broker.publish([Message("t", b"new")])
    await asyncio.wait_for(runner, 1)
    assert seen == [b"new"]


async def test_an_outage_fails_publish_and_join() -> None:
    broker = MemoryBroker()
    broker.outage("switched off")
    with pytest.raises(BusUnavailable, match="memory broker unavailable: switched off"):
        await broker.publish([Message("t", b"x")])
    with pytest.raises(BusUnavailable):
        await broker.consumer("t", "g").start()
    broker.outage(None)
    await broker.publish([Message("t", b"x")])
    assert [r.value for r in broker.records("t")] == [b"x"]


async def test_a_partition_keeps_only_its_retention_and_consumers_skip_what_was_dropped() -> None:
    broker = MemoryBroker(partitions=1, retention=3)
    await broker.publish([Message(topic="t", value=str(n).encode()) for n in range(5)])
    assert [(r.offset, r.value) for r in broker.records("t")] == [(2, b"2"), (3, b"3"), (4, b"4")]
    consumer = broker.consumer("t", "g")
    seen: list[int] = []

    async def handle(record: Received) -> None:
        seen.append(record.offset)
        if len(seen) == 3:
            await consumer.stop()

    await consumer.run(handle)
    assert seen == [2, 3, 4]
    assert broker.committed("t", "g") == {0: 5}


async def test_a_partition_keeps_only_its_retention_in_bytes() -> None:
    broker = MemoryBroker(partitions=1, retention_bytes=10_000)
    await broker.publish([Message(topic="t", value=bytes(1000), key=str(n).encode()) for n in range(50)])
    kept = broker.records("t")
    assert sum(len(r.value) + len(r.key or b"") for r in kept) <= 10_000
    assert len(kept) >= 8
    assert kept[-1].offset == 49  # the newest are kept, offsets continue
    assert [r.offset for r in kept] == list(range(50 - len(kept), 50))
    await broker.publish([Message(topic="t", value=bytes(50_000))])  # larger than the limit: kept alone
    assert [r.offset for r in broker.records("t")] == [50]
