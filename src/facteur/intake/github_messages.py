"""The messages a GitHub delivery publishes (reference §2.9): the JSON task on ``github.codex.tasks``, the
``CodexTask`` protobuf on ``github.issues.codex.tasks`` and the raw body on ``github.webhook.events``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from facteur.bus.port import Headers, Message
from facteur.domain import codex_task
from facteur.domain.stages import Stage
from facteur.intake.github_delivery import WebhookDelivery
from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb
from facteur.settings import TopicSettings

PROTOBUF_HEADERS: Headers = (
    ("content-type", b"application/x-protobuf"),
    ("x-protobuf-message", b"proompteng.froussard.v1.CodexTask"),
    ("x-protobuf-schema", b"proompteng/froussard/v1/codex_task.proto"),
)


def task_key(stage: Stage, number: int, fingerprint: str | None = None) -> str:
    """``issue-<n>-planning``, ``issue-<n>-implementation``, ``pull-<pr>-review-<fingerprint>``."""
    if stage is Stage.REVIEW:
        return f"pull-{number}-review-{fingerprint or ''}"
    return f"issue-{number}-{stage.value}"


def task_messages(
    task: pb.CodexTask,
    *,
    key: str,
    delivery: WebhookDelivery,
    topics: TopicSettings,
    now: datetime,
    extra_headers: Sequence[tuple[str, bytes]] = (),
) -> list[Message]:
    """The JSON message, then the protobuf, with the delivery's header set and the stage header."""
    document = codex_task.to_task_message(task, now=now)
    stage = str(document["stage"])
    headers: Headers = (*delivery.headers, ("x-codex-task-stage", stage.encode()), *extra_headers)
    common = tuple((n, v) for n, v in headers if n != "content-type")
    json_headers = (*common, ("content-type", b"application/json"))
    proto_headers = (*common, *PROTOBUF_HEADERS)
    return [
        Message(
            topic=topics.codex_tasks_json,
            key=key.encode(),
            value=json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(),
            headers=json_headers,
        ),
        Message(
            topic=topics.codex_tasks, key=key.encode(), value=task.SerializeToString(), headers=proto_headers
        ),
    ]


def raw_message(delivery: WebhookDelivery, topics: TopicSettings) -> Message:
    """The verified body as GitHub sent it, keyed by the delivery id."""
    return Message(
        topic=topics.raw_webhooks,
        key=delivery.delivery_id.encode(),
        value=delivery.raw,
        headers=delivery.headers,
    )
