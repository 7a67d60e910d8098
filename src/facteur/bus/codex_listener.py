"""The codex-task listener: consume ``CodexTask`` messages, report them, optionally ingest them.

Each message of ``bus.topics.codex_tasks`` is decoded and checked by the intake of ``POST /codex/tasks``
(binary protobuf, or proto-JSON when its ``content-type`` header says JSON). A message that cannot be
decoded or accepted is copied to ``<topic>.dlq`` — same key, same headers, plus ``facteur-dlq-reason`` and
``facteur-dlq-source`` — and committed. A good one is reported and, when dispatching, ingested exactly as
``POST /codex/tasks`` would (idempotent by delivery id), then committed. Anything else that fails (the
store, the dead-letter publish, the commit) stops the listener with the message uncommitted, so it is read
again next time. Used by ``facteur codex-listen`` and by ``facteur serve`` (``bus.consume_codex_tasks``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from facteur.bus.port import Broker, Message, Received, StartAt, dead_letter_topic
from facteur.domain import codex_task
from facteur.errors import InvalidInput
from facteur.intake.codex_tasks import Answer

logger = logging.getLogger(__name__)

DLQ_REASON_HEADER = "facteur-dlq-reason"
DLQ_SOURCE_HEADER = "facteur-dlq-source"
#: longest reason kept in the dead-letter header
MAX_REASON = 1000

Decode = Callable[[bytes, str | None], codex_task.AcceptedTask]
Receive = Callable[[codex_task.AcceptedTask, bytes], Awaitable[Answer]]


def _text(key: bytes | None) -> str:
    return key.decode("utf-8", errors="replace") if key is not None else ""


@dataclass(frozen=True, slots=True)
class TaskSeen:
    """A task the listener accepted, with the ingest's answer when it dispatches."""

    received: Received
    accepted: codex_task.AcceptedTask
    answer: Answer | None

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "topic": self.received.topic,
            "partition": self.received.partition,
            "offset": self.received.offset,
            "key": _text(self.received.key),
            "stage": codex_task.stage_name(self.accepted.task.stage),
            "repository": self.accepted.repository,
            "issueNumber": self.accepted.issue_number,
            "deliveryId": self.accepted.delivery_id,
            "payload": codex_task.to_proto_json(self.accepted.task),
        }
        if self.answer is not None:
            document["dispatch"] = self.answer.body
        return document

    def line(self) -> str:
        parts = [
            f"codex task key={_text(self.received.key)}",
            f"stage={codex_task.stage_name(self.accepted.task.stage)}",
            f"repo={self.accepted.repository}",
            f"issue={self.accepted.issue_number}",
            f"delivery={self.accepted.delivery_id}",
        ]
        if self.answer is not None:
            body = self.answer.body
            parts.append(f"run={body.get('runId')}")
            parts.append(f"workflow={body.get('workflowName') or '-'}")
            parts.append(f"duplicate={str(self.answer.duplicate).lower()}")
        payload = json.dumps(codex_task.to_proto_json(self.accepted.task), separators=(",", ":"))
        parts.append(f"payload={payload}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the listener could not accept, and where it went."""

    received: Received
    reason: str
    topic: str

    def line(self) -> str:
        return (
            f"dead letter key={_text(self.received.key)} from={self.received.position} to={self.topic} "
            f"reason={self.reason}"
        )

    def document(self) -> dict[str, Any]:
        return {
            "deadLetter": {
                "topic": self.received.topic,
                "partition": self.received.partition,
                "offset": self.received.offset,
                "key": _text(self.received.key),
                "to": self.topic,
                "reason": self.reason,
            }
        }


def _ignore(_: Any) -> None:
    return None


class CodexListener:
    def __init__(
        self,
        broker: Broker,
        *,
        topic: str,
        group: str,
        decode: Decode,
        receive: Receive | None = None,
        on_task: Callable[[TaskSeen], None] = _ignore,
        on_dead_letter: Callable[[DeadLetter], None] = _ignore,
        start_at: StartAt = "earliest",
    ) -> None:
        self._broker = broker
        self.topic = topic
        self.group = group
        self._decode = decode
        self._receive = receive
        self._on_task = on_task
        self._on_dead_letter = on_dead_letter
        self.consumer = broker.consumer(topic, group, start_at=start_at)

    async def start(self) -> None:
        """Join the group; raise :class:`facteur.errors.BusUnavailable` when the brokers cannot be reached."""
        await self.consumer.start()

    async def run(self) -> None:
        """Handle messages until :meth:`stop`; raise what stopped it (see the module docstring)."""
        await self.consumer.run(self.handle)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def close(self) -> None:
        await self.consumer.close()

    async def handle(self, received: Received) -> None:
        content_type = received.header("content-type")
        try:
            accepted = self._decode(
                received.value, content_type.decode("latin-1") if content_type is not None else None
            )
        except InvalidInput as exc:
            await self._dead_letter(received, exc.message)
            return
        answer = await self._receive(accepted, received.value) if self._receive is not None else None
        self._on_task(TaskSeen(received, accepted, answer))

    async def _dead_letter(self, received: Received, reason: str) -> None:
        reason = " ".join(reason.split())[:MAX_REASON]
        letter = DeadLetter(received, reason, dead_letter_topic(received.topic))
        headers = (
            *received.headers,
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_SOURCE_HEADER, received.position.encode()),
        )
        await self._broker.publish(
            [Message(topic=letter.topic, value=received.value, key=received.key, headers=headers)]
        )
        logger.warning(
            "codex task dead-lettered: source=%s key=%s dlq=%s reason=%s",
            received.position,
            _text(received.key),
            letter.topic,
            reason,
        )
        self._on_dead_letter(letter)
