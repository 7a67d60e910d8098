"""The bus contract, run against the in-process broker and against Kafka (noida-db)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from facteur.bus.kafka import KafkaBroker
from facteur.bus.memory import MemoryBroker
from facteur.bus.port import Broker, Message, Received
from facteur.settings import KafkaSettings
from tests.support.bus import consume, unique


@pytest.fixture(params=["memory", "kafka"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    opened: Broker
    if request.param == "memory":
        opened = MemoryBroker()
    else:
        server = request.getfixturevalue("kafka")
        opened = KafkaBroker(KafkaSettings(brokers=[server.bootstrap], timeout_seconds=10))
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


class Boom(Exception):
    pass


async def test_messages_arrive_with_key_value_and_headers(broker: Broker) -> None:
    topic, group = unique("contract.keys"), unique("g")
    sent = [
        Message(topic, b"first", key=b"issue-1-planning", headers=(("x-codex-task-stage", b"planning"),)),
        Message(topic, b"\x00binary\xff", key=None, headers=(("a", b"1"), ("b", b""))),
        Message(topic, b"", key=b"empty-value"),
    ]
    await broker.publish(sent)

    received = await consume(broker, topic, group, 3)

    assert sorted(((r.key, r.value, r.headers) for r in received), key=repr) == sorted(
        ((m.key, m.value, m.headers) for m in sent), key=repr
    )
    by_value = {r.value: r for r in received}
    assert by_value[b"first"].header("X-Codex-Task-Stage") == b"planning"
    assert by_value[b"\x00binary\xff"].key is None
    assert all(r.topic == topic and r.offset >= 0 for r in received)


async def test_messages_of_a_key_share_a_partition_and_keep_their_order(broker: Broker) -> None:
    topic, group = unique("contract.order"), unique("g")
    keys = [b"issue-1-planning", b"issue-2-planning", b"pull-3-review-abc"]
    await broker.publish([Message(topic, f"{n}".encode(), key=keys[n % 3]) for n in range(30)])
    await broker.publish([Message(topic, f"{n}".encode(), key=keys[n % 3]) for n in range(30, 36)])

    received = await consume(broker, topic, group, 36)

    for index, key in enumerate(keys):
        mine = [r for r in received if r.key == key]
        assert [int(r.value) for r in mine] == list(range(index, 36, 3))
        assert len({r.partition for r in mine}) == 1
        assert [r.offset for r in mine] == sorted(r.offset for r in mine)


async def test_a_new_consumer_of_the_group_resumes_at_the_committed_offset(broker: Broker) -> None:
    topic, group = unique("contract.resume"), unique("g")
    await broker.publish([Message(topic, f"m{n}".encode(), key=b"k") for n in range(5)])

    first = await consume(broker, topic, group, 2)
    second = await consume(broker, topic, group, 3)
    await broker.publish([Message(topic, b"m5", key=b"k")])
    third = await consume(broker, topic, group, 1)

    assert [r.value for r in first] == [b"m0", b"m1"]
    assert [r.value for r in second] == [b"m2", b"m3", b"m4"]
    assert [r.value for r in third] == [b"m5"]
    # another group reads from the start, independently
    other = await consume(broker, topic, unique("other"), 6)
    assert [r.value for r in other] == [f"m{n}".encode() for n in range(6)]


async def test_a_failing_handler_commits_nothing_from_its_message_on(broker: Broker) -> None:
    topic, group = unique("contract.fail"), unique("g")
    await broker.publish([Message(topic, f"m{n}".encode(), key=b"k") for n in range(3)])

    async def fail_on_m1(record: Received) -> None:
        if record.value == b"m1":
            raise Boom("handler failed")

    with pytest.raises(Boom):
        await consume(broker, topic, group, 3, handler=fail_on_m1)
    again = await consume(broker, topic, group, 2)

    assert [r.value for r in again] == [b"m1", b"m2"]


async def test_run_can_be_called_again_after_a_handler_failure(broker: Broker) -> None:
    topic, group = unique("contract.rerun"), unique("g")
    await broker.publish([Message(topic, f"m{n}".encode(), key=b"k") for n in range(2)])
    consumer = broker.consumer(topic, group)
    seen: list[bytes] = []
    failures = 0

    async def flaky(record: Received) -> None:
        nonlocal failures
        if record.value == b"m0" and failures == 0:
            failures += 1
            raise Boom("once")
        seen.append(record.value)
        if len(seen) == 2:
            await consumer.stop()

    try:
        with pytest.raises(Boom):
            await consumer.run(flaky)
        await consumer.run(flaky)
    finally:
        await consumer.close()
    assert seen == [b"m0", b"m1"]


async def test_publishing_nothing_is_a_no_op(broker: Broker) -> None:
    await broker.publish([])
