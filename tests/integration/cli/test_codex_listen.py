"""`facteur codex-listen` as a user runs it, against a real Kafka-protocol broker (noida-db)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facteur.bus.codex_listener import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER
from facteur.bus.kafka import KafkaBroker
from facteur.bus.port import Message
from facteur.clock import SystemClock
from facteur.domain import codex_task
from facteur.settings import KafkaSettings
from facteur.store.sql import SqlStore
from tests.support.bus import canary_bytes, consume, unique
from tests.support.kafka import KafkaServer
from tests.support.services import free_port, shared_path

PROTOBUF = (("content-type", b"application/x-protobuf"), ("x-codex-task-stage", b"planning"))
READ_TIMEOUT = 30.0


@dataclass
class Listener:
    process: asyncio.subprocess.Process
    stderr_path: Path

    async def line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(READ_TIMEOUT):
            raw = await self.process.stdout.readline()
        assert raw, f"listener exited early: {self.stderr_path.read_text()}"
        return raw.decode().rstrip("\n")

    async def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(sig)
        async with asyncio.timeout(READ_TIMEOUT):
            code = await self.process.wait()
        return code, self.stderr_path.read_text()


def listener_env(kafka: KafkaServer | str, topic: str, group: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    env.update(
        {
            "FACTEUR_BUS__KIND": "kafka",
            "FACTEUR_BUS__KAFKA__BROKERS": kafka if isinstance(kafka, str) else kafka.bootstrap,
            "FACTEUR_BUS__KAFKA__TIMEOUT_SECONDS": "5",
            "FACTEUR_BUS__TOPICS__CODEX_TASKS": topic,
            "FACTEUR_BUS__CODEX_LISTENER__GROUP": group,
            **extra,
        }
    )
    return env


@asynccontextmanager
async def listening(env: dict[str, str], cwd: Path, *args: str) -> AsyncIterator[Listener]:
    stderr_path = cwd / f"stderr-{uuid.uuid4().hex[:6]}.log"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "facteur",
            "codex-listen",
            *args,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    listener = Listener(process, stderr_path)
    try:
        yield listener
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def publish(kafka: KafkaServer, *messages: Message) -> None:
    broker = KafkaBroker(KafkaSettings(brokers=[kafka.bootstrap], timeout_seconds=5))
    await broker.start()
    try:
        await broker.publish(messages)
    finally:
        await broker.close()


def canary_message(topic: str) -> Message:
    return Message(topic, canary_bytes(), key=b"issue-999-planning", headers=PROTOBUF)


def payload_bytes(payload: dict[str, Any]) -> bytes:
    return codex_task.decode_json(json.dumps(payload).encode()).SerializeToString()


async def test_prints_the_canary_task_then_stops_cleanly_on_sigterm(
    kafka: KafkaServer, tmp_path: Path
) -> None:
    topic = unique("codex.tasks")
    await publish(kafka, canary_message(topic))

    async with listening(listener_env(kafka, topic, unique("g")), tmp_path) as listener:
        line = await listener.line()
        code, stderr = await listener.stop(signal.SIGTERM)

    prefix, _, payload = line.partition(" payload=")
    assert prefix == (
        "codex task key=issue-999-planning stage=CODEX_TASK_STAGE_PLANNING repo=proompteng/lab issue=999 "
        "delivery=dry-run-0001"
    )
    assert payload_bytes(json.loads(payload)) == canary_bytes()
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def test_json_lines_and_ctrl_c(kafka: KafkaServer, tmp_path: Path) -> None:
    topic = unique("codex.tasks")
    await publish(kafka, canary_message(topic))

    async with listening(listener_env(kafka, topic, unique("g")), tmp_path, "--json") as listener:
        document = json.loads(await listener.line())
        code, stderr = await listener.stop(signal.SIGINT)

    expected = json.loads(shared_path("fixtures", "codex-task", "dry-run-0001.expected.json").read_text())
    assert document["key"] == "issue-999-planning"
    assert document["stage"] == expected["stage"]
    assert document["repository"] == expected["repository"]
    assert document["issueNumber"] == expected["issue_number"]
    assert document["deliveryId"] == expected["delivery_id"]
    assert (document["topic"], document["offset"]) == (topic, 0)
    assert payload_bytes(document["payload"]) == canary_bytes()
    assert "dispatch" not in document
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def test_dispatch_records_the_run_once_per_delivery(kafka: KafkaServer, tmp_path: Path) -> None:
    topic = unique("codex.tasks")
    url = f"sqlite:///{tmp_path / 'facteur.db'}"
    env = listener_env(kafka, topic, unique("g"), FACTEUR_DATABASE__URL=url, FACTEUR_EXECUTOR__KIND="none")
    await publish(kafka, canary_message(topic), canary_message(topic))

    async with listening(env, tmp_path, "--dispatch", "--json") as listener:
        first = json.loads(await listener.line())
        replay = json.loads(await listener.line())
        code, stderr = await listener.stop()
    assert code == 0, stderr

    assert first["dispatch"]["duplicate"] is False
    assert first["dispatch"]["stage"] == "planning"
    assert first["dispatch"]["workflowName"]
    assert replay["dispatch"] == {**first["dispatch"], "duplicate": True}
    store = SqlStore.open(url, clock=SystemClock())
    try:
        stored = await store.find_delivery("codex_task", "dry-run-0001")
        assert stored is not None
        run = await store.get_run(uuid.UUID(first["dispatch"]["runId"]))
        assert str(run.id) == stored["runId"]
        assert run.delivery_id == "dry-run-0001"
        assert run.workflow_name == first["dispatch"]["workflowName"]
        assert len(await store.list_runs()) == 1
    finally:
        await store.close()


async def test_bad_messages_go_to_the_dead_letter_topic_and_are_committed(
    kafka: KafkaServer, tmp_path: Path
) -> None:
    topic, group = unique("codex.tasks"), unique("g")
    garbage = Message(topic, b"\xff\xfe not protobuf", key=b"bad", headers=(("x-github-delivery", b"d-1"),))
    no_delivery = Message(
        topic,
        json.dumps({"stage": "planning", "repository": "a/b", "issueNumber": 1}).encode(),
        key=b"issue-1-planning",
        headers=(("content-type", b"application/json"),),
    )
    await publish(kafka, garbage, no_delivery)

    async with listening(listener_env(kafka, topic, group), tmp_path, "--json") as listener:
        letters = [json.loads(await listener.line())["deadLetter"] for _ in range(2)]
        code, stderr = await listener.stop()
    assert code == 0, stderr
    assert [letter["key"] for letter in letters] == ["bad", "issue-1-planning"]
    assert all(letter["to"] == f"{topic}.dlq" for letter in letters)
    assert "missing delivery_id" in letters[1]["reason"]

    broker = KafkaBroker(KafkaSettings(brokers=[kafka.bootstrap], timeout_seconds=5))
    try:
        dead = await consume(broker, f"{topic}.dlq", unique("dlq-reader"), 2)
    finally:
        await broker.close()
    by_key = {record.key: record for record in dead}
    assert by_key[b"bad"].value == garbage.value
    assert by_key[b"bad"].header("x-github-delivery") == b"d-1"
    assert b"not a binary proompteng.froussard.v1.CodexTask" in (
        by_key[b"bad"].header(DLQ_REASON_HEADER) or b""
    )
    assert by_key[b"bad"].header(DLQ_SOURCE_HEADER) == f"{topic}/0/0".encode()
    assert by_key[b"issue-1-planning"].value == no_delivery.value
    assert by_key[b"issue-1-planning"].header("content-type") == b"application/json"
    assert b"missing delivery_id" in (by_key[b"issue-1-planning"].header(DLQ_REASON_HEADER) or b"")

    # committed: the next listener of the group sees only what comes after them
    await publish(kafka, canary_message(topic))
    async with listening(listener_env(kafka, topic, group), tmp_path, "--json") as listener:
        after = json.loads(await listener.line())
        code, stderr = await listener.stop()
    assert after["deliveryId"] == "dry-run-0001"
    assert after["offset"] == 2
    assert code == 0, stderr


async def test_unreachable_brokers_are_named_in_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    async with listening(listener_env(address, "t", "g"), tmp_path) as listener:
        async with asyncio.timeout(READ_TIMEOUT):
            code = await listener.process.wait()
    stderr = listener.stderr_path.read_text()
    assert code == 1
    assert stderr.startswith(f"error: Kafka brokers {address} unavailable: cannot connect"), stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACTEUR_BUS__KIND": "memory"}, "codex-listen reads from Kafka: set bus.kind: kafka"),
        ({"FACTEUR_BUS__KAFKA__SASL__MECHANISM": "GSSAPI"}, "invalid setting bus.kafka.sasl.mechanism"),
    ],
)
async def test_configuration_mistakes_exit_2_without_traceback(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    async with listening({**listener_env("127.0.0.1:9092", "t", "g"), **env}, tmp_path) as listener:
        async with asyncio.timeout(READ_TIMEOUT):
            code = await listener.process.wait()
    stderr = listener.stderr_path.read_text()
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr
