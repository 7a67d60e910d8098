"""Helpers for bus tests: unique names, consuming a number of messages, the seeds' canary task."""

from __future__ import annotations

import asyncio
import base64
import uuid

from facteur.bus.port import Broker, Handler, Received
from tests.support.services import shared_path


def unique(name: str) -> str:
    """A topic or group name no other test uses."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def canary_bytes() -> bytes:
    """The seeds' canary ``CodexTask`` (binary, 170 bytes)."""
    return base64.b64decode(shared_path("fixtures", "codex-task", "dry-run-0001.b64").read_text())


async def consume(
    broker: Broker,
    topic: str,
    group: str,
    count: int,
    *,
    timeout: float = 15.0,
    handler: Handler | None = None,
) -> list[Received]:
    """Run one consumer of the group until ``count`` messages were handled (and committed), then close it."""
    consumer = broker.consumer(topic, group)
    received: list[Received] = []

    async def collect(record: Received) -> None:
        if handler is not None:
            await handler(record)
        received.append(record)
        if len(received) >= count:
            await consumer.stop()

    try:
        async with asyncio.timeout(timeout):
            await consumer.run(collect)
    finally:
        await consumer.close()
    return received
