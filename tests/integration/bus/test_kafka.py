"""The Kafka broker against a real Kafka-protocol broker (noida-db): outages, restarts, configuration."""

from __future__ import annotations

import time

import pytest

from facteur.bus.kafka import KafkaBroker
from facteur.bus.port import Message
from facteur.errors import BusUnavailable
from facteur.settings import KafkaSettings
from tests.support.bus import consume, unique
from tests.support.kafka import KafkaServer
from tests.support.services import free_port

TIMEOUT = 2.0


async def test_publish_during_an_outage_fails_in_bounded_time_then_works_after_restart(
    kafka: KafkaServer,
) -> None:
    topic, group = unique("outage"), unique("g")
    broker = KafkaBroker(KafkaSettings(brokers=[kafka.bootstrap], timeout_seconds=TIMEOUT))
    await broker.start()
    try:
        await broker.publish([Message(topic, b"before", key=b"k")])
        kafka.stop()

        started = time.monotonic()
        with pytest.raises(BusUnavailable) as caught:
            await broker.publish([Message(topic, b"during", key=b"k")])
        elapsed = time.monotonic() - started

        assert kafka.bootstrap in caught.value.message
        assert elapsed < TIMEOUT + 1.5, elapsed

        kafka.start()
        await broker.publish([Message(topic, b"after", key=b"k")])
        received = await consume(broker, topic, group, 2)
    finally:
        await broker.close()
    assert [r.value for r in received] == [b"before", b"after"]


async def test_a_consumer_resumes_at_its_commit_after_the_broker_restarted(kafka: KafkaServer) -> None:
    topic, group = unique("restart"), unique("g")
    broker = KafkaBroker(KafkaSettings(brokers=[kafka.bootstrap], timeout_seconds=5))
    await broker.start()
    try:
        await broker.publish([Message(topic, f"m{n}".encode(), key=b"k") for n in range(3)])
        first = await consume(broker, topic, group, 1)
        kafka.restart()
        await broker.publish([Message(topic, b"m3", key=b"k")])
        rest = await consume(broker, topic, group, 3)
    finally:
        await broker.close()
    assert [r.value for r in first] == [b"m0"]
    assert [r.value for r in rest] == [b"m1", b"m2", b"m3"]


async def test_unreachable_brokers_are_named_at_start() -> None:
    address = f"127.0.0.1:{free_port()}"
    broker = KafkaBroker(KafkaSettings(brokers=[address], timeout_seconds=TIMEOUT))
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=f"Kafka brokers {address} unavailable: cannot connect"):
        await broker.start()
    consumer = broker.consumer("t", "g")
    with pytest.raises(BusUnavailable, match=f"Kafka brokers {address} unavailable: cannot join group g"):
        await consumer.start()
    await consumer.close()
    await broker.close()
    assert time.monotonic() - started < 4 * TIMEOUT
