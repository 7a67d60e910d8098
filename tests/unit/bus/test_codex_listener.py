"""The codex-task listener over the in-process broker and store: report, ingest, dead-letter, fail safely."""

from __future__ import annotations

import json

import pytest

from facteur.bus.codex_listener import (
    DLQ_REASON_HEADER,
    DLQ_SOURCE_HEADER,
    CodexListener,
    DeadLetter,
    TaskSeen,
)
from facteur.bus.memory import MemoryBroker
from facteur.bus.port import Message, Received
from facteur.errors import BusUnavailable, CommitFailed, StoreUnavailable
from facteur.executors.none import NoneExecutor
from facteur.runtime import Runtime, build_runtime
from facteur.settings import Settings
from facteur.store.memory import MemoryStore
from tests.support.bus import canary_bytes
from tests.support.fakes import FakeClock, SequentialIds

TOPIC = "github.issues.codex.tasks"
GROUP = "facteur-codex-listener"


@pytest.fixture
async def runtime(clock: FakeClock, ids: SequentialIds) -> Runtime:
    store = MemoryStore(clock)
    return await build_runtime(Settings(), clock=clock, ids=ids, store=store, executor=NoneExecutor())


class Seen:
    def __init__(self) -> None:
        self.tasks: list[TaskSeen] = []
        self.letters: list[DeadLetter] = []


def make_listener(broker: MemoryBroker, runtime: Runtime, seen: Seen, *, dispatch: bool) -> CodexListener:
    return CodexListener(
        broker,
        topic=TOPIC,
        group=GROUP,
        decode=runtime.intake.decode,
        receive=runtime.intake.receive if dispatch else None,
        on_task=seen.tasks.append,
        on_dead_letter=seen.letters.append,
    )


async def run_until_idle(listener: CodexListener, broker: MemoryBroker, expected: int) -> None:
    """Handle messages until ``expected`` offsets are committed in total (or the listener fails)."""

    async def handle(record: Received) -> None:
        await listener.handle(record)
        committed = sum(broker.committed(TOPIC, GROUP).values())
        if committed + 1 >= expected:
            await listener.stop()

    await listener.consumer.run(handle)


def canary(key: bytes = b"issue-999-planning") -> Message:
    return Message(TOPIC, canary_bytes(), key=key, headers=(("content-type", b"application/x-protobuf"),))


async def test_echo_reports_the_task_and_commits(runtime: Runtime) -> None:
    broker, seen = MemoryBroker(), Seen()
    await broker.publish([canary()])
    listener = make_listener(broker, runtime, seen, dispatch=False)

    await run_until_idle(listener, broker, 1)

    [task] = seen.tasks
    assert task.answer is None
    assert task.line().startswith(
        "codex task key=issue-999-planning stage=CODEX_TASK_STAGE_PLANNING repo=proompteng/lab issue=999 "
        "delivery=dry-run-0001 payload={"
    )
    document = task.document()
    assert document["payload"]["deliveryId"] == "dry-run-0001"
    assert "dispatch" not in document
    assert sum(broker.committed(TOPIC, GROUP).values()) == 1
    assert await runtime.store.find_delivery("codex_task", "dry-run-0001") is None  # echo records nothing


async def test_dispatch_ingests_like_the_http_intake_and_is_idempotent(runtime: Runtime) -> None:
    broker, seen = MemoryBroker(), Seen()
    await broker.publish([canary(), canary()])
    listener = make_listener(broker, runtime, seen, dispatch=True)

    await run_until_idle(listener, broker, 2)

    first, replay = seen.tasks
    assert first.answer is not None and replay.answer is not None
    assert first.answer.duplicate is False
    assert replay.answer.duplicate is True
    assert replay.answer.body["runId"] == first.answer.body["runId"]
    assert "duplicate=false" in first.line() and "duplicate=true" in replay.line()
    stored = await runtime.store.find_delivery("codex_task", "dry-run-0001")
    assert stored is not None and stored["runId"] == first.answer.body["runId"]
    assert len(await runtime.store.list_runs()) == 1


async def test_json_tasks_are_decoded_by_content_type(runtime: Runtime) -> None:
    broker, seen = MemoryBroker(), Seen()
    body = {
        "stage": "implementation",
        "repository": "a/b",
        "issueNumber": 7,
        "deliveryId": "json-1",
        "prompt": "do it",
    }
    await broker.publish(
        [
            Message(
                TOPIC, json.dumps(body).encode(), key=b"k", headers=(("Content-Type", b"application/json"),)
            )
        ]
    )
    await run_until_idle(make_listener(broker, runtime, seen, dispatch=False), broker, 1)
    assert [t.accepted.delivery_id for t in seen.tasks] == ["json-1"]


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\xff\xff\xff", (), "not a binary proompteng.froussard.v1.CodexTask"),
        (b"", (), "empty payload"),
        (b"{", (("content-type", b"application/json"),), "body is not valid JSON"),
        (
            json.dumps({"stage": "planning", "repository": "a/b", "issueNumber": 1}).encode(),
            (("content-type", b"application/json"),),
            "missing delivery_id",
        ),
    ],
)
async def test_bad_messages_are_dead_lettered_with_key_headers_and_reason(
    runtime: Runtime, value: bytes, headers: tuple[tuple[str, bytes], ...], reason: str
) -> None:
    broker, seen = MemoryBroker(), Seen()
    original_headers = (*headers, ("x-github-delivery", b"d-9"))
    await broker.publish([Message(TOPIC, value, key=b"issue-1-planning", headers=original_headers)])

    await run_until_idle(make_listener(broker, runtime, seen, dispatch=True), broker, 1)

    assert seen.tasks == []
    [letter] = seen.letters
    assert reason in letter.reason
    [dead] = broker.records(f"{TOPIC}.dlq")
    assert dead.value == value
    assert dead.key == b"issue-1-planning"
    assert dead.headers[: len(original_headers)] == original_headers
    assert reason in (dead.header(DLQ_REASON_HEADER) or b"").decode()
    assert dead.header(DLQ_SOURCE_HEADER) == letter.received.position.encode()
    assert sum(broker.committed(TOPIC, GROUP).values()) == 1
    assert await runtime.store.list_runs() == []


async def test_a_store_outage_stops_the_listener_without_committing(runtime: Runtime) -> None:
    broker, seen = MemoryBroker(), Seen()
    await broker.publish([canary()])
    assert isinstance(runtime.store, MemoryStore)
    runtime.store.unavailable = True
    listener = make_listener(broker, runtime, seen, dispatch=True)

    with pytest.raises(StoreUnavailable):
        await listener.run()
    await listener.close()
    assert broker.committed(TOPIC, GROUP) == {}

    runtime.store.unavailable = False  # the next listener of the group gets the task again
    await run_until_idle(make_listener(broker, runtime, seen, dispatch=True), broker, 1)
    assert [t.accepted.delivery_id for t in seen.tasks] == ["dry-run-0001"]


async def test_a_failed_dead_letter_publish_commits_nothing(runtime: Runtime) -> None:
    broker, seen = MemoryBroker(), Seen()
    await broker.publish([Message(TOPIC, b"\xff\xff", key=b"k")])
    listener = make_listener(broker, runtime, seen, dispatch=False)
    await listener.start()
    broker.outage("connection refused")

    with pytest.raises(BusUnavailable, match="connection refused"):
        await listener.run()
    assert broker.committed(TOPIC, GROUP) == {}
    assert broker.records(f"{TOPIC}.dlq") == []


async def test_a_commit_failure_stops_the_listener(runtime: Runtime) -> None:
    broker, seen = MemoryBroker(), Seen()
    await broker.publish([canary()])
    listener = make_listener(broker, runtime, seen, dispatch=False)
    await listener.start()

    async def break_commits_then_handle(record: Received) -> None:
        broker.outage("coordinator moved")
        await listener.handle(record)

    with pytest.raises(CommitFailed, match="coordinator moved"):
        await listener.consumer.run(break_commits_then_handle)
    assert len(seen.tasks) == 1
    assert broker.committed(TOPIC, GROUP) == {}
