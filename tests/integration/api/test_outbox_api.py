"""What a submitted run publishes, and how the outbox shows in /readyz and /metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from facteur.bus.memory import MemoryBroker
from facteur.executors.none import NoneExecutor
from facteur.store.memory import MemoryStore
from tests.integration.api.test_codex_tasks import PROTOBUF, canary, settings_for, task_bytes
from tests.support.app import Running, running_app
from tests.support.fakes import FakeClock, SequentialIds


@pytest.fixture
async def api(sqlite_url: str, clock: FakeClock, ids: SequentialIds) -> AsyncIterator[Running]:
    async with running_app(
        settings_for(sqlite_url), clock=clock, ids=ids, executor=NoneExecutor()
    ) as running:
        yield running


async def published(api: Running, count: int) -> list[dict[str, object]]:
    broker = api.runtime.broker
    assert isinstance(broker, MemoryBroker)
    async with asyncio.timeout(5):
        while len(broker.records("codex.execution")) < count:
            await asyncio.sleep(0.01)
    return [json.loads(r.value) for r in broker.records("codex.execution")]


async def test_a_submitted_run_is_published_on_codex_execution(api: Running) -> None:
    response = await api.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
    body = response.json()
    [message] = await published(api, 1)
    assert message["event"] == "run.submitted"
    assert message["status"] == "submitted"
    assert (message["runId"], message["ideaId"], message["taskId"]) == (
        body["runId"],
        body["ideaId"],
        body["taskId"],
    )
    assert message["workflowName"] == body["workflowName"]
    broker = api.runtime.broker
    assert isinstance(broker, MemoryBroker)
    [record] = broker.records("codex.execution")
    assert record.key == f"run-{body['runId']}".encode()
    assert record.header("x-facteur-event") == b"run.submitted"
    # a replay submits nothing, so it publishes nothing
    await api.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
    await asyncio.sleep(0.05)
    assert len(broker.records("codex.execution")) == 1


async def test_readyz_and_metrics_show_the_outbox(api: Running) -> None:
    for n in range(3):
        await api.client.post("/codex/tasks", content=task_bytes(delivery_id=f"m-{n}"), headers=PROTOBUF)
    await published(api, 3)
    ready = (await api.client.get("/readyz")).json()
    assert ready["outbox"]["relay"] == "leading"
    assert ready["outbox"]["bus"] == "memory"
    assert ready["outbox"]["backlog"] == 0
    assert ready["outbox"]["published"] == 3
    assert ready["outbox"]["problem"] is None
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    figures = dict(line.split(" ") for line in metrics.text.splitlines() if line and not line.startswith("#"))
    assert figures["facteur_outbox_backlog"] == "0"
    assert figures["facteur_outbox_published_total"] == "3"
    assert figures["facteur_outbox_relay_leading"] == "1"
    assert figures["facteur_store_up"] == "1"
    assert figures["facteur_runs_stuck_total"] == str(api.runtime.reconciler.stuck_total)
    assert 0 <= int(figures["facteur_scheduler_passes_total"]) <= api.runtime.scheduler.passes


async def test_a_broker_outage_shows_in_readyz_but_facteur_stays_ready(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    settings = settings_for("sqlite:///unused.db", FACTEUR_BUS__OUTBOX__MAX_BACKOFF_SECONDS="0.1")
    async with running_app(settings, clock=clock, store=store, executor=NoneExecutor()) as running:
        broker = running.runtime.broker
        assert isinstance(broker, MemoryBroker)
        broker.outage("brokers unreachable")
        accepted = await running.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
        assert accepted.status_code == 202
        relay = running.runtime.relay
        assert relay is not None
        async with asyncio.timeout(5):
            while relay.status().failures == 0:
                await asyncio.sleep(0.01)
        ready = await running.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["outbox"]["backlog"] == 1
        assert "brokers unreachable" in ready.json()["outbox"]["problem"]
        broker.outage(None)
        await published(running, 1)
