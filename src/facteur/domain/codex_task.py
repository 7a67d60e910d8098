"""The ``proompteng.froussard.v1.CodexTask`` wire format and its JSON forms.

Three representations are in use (reference: proompteng-lab.md §1, §2.9):

* the protobuf message (binary), published on ``github.issues.codex.tasks`` and posted to ``/codex/tasks``;
* canonical proto-JSON (camelCase keys, int64 as strings, enum names);
* the JSON task message of ``github.codex.tasks`` (camelCase keys, numeric ``issueNumber``, lower-case
  ``stage``, ISO ``issuedAt``; it carries no ``deliveryId``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from facteur.domain.ideas import is_repository
from facteur.domain.stages import Stage
from facteur.errors import InvalidInput, InvalidPayload
from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb

CodexTask = pb.CodexTask
CodexTaskStage = pb.CodexTaskStage

_STAGE_PREFIX = "CODEX_TASK_STAGE_"
_STAGE_BY_ENUM: dict[int, Stage] = {
    pb.CODEX_TASK_STAGE_PLANNING: Stage.PLANNING,
    pb.CODEX_TASK_STAGE_IMPLEMENTATION: Stage.IMPLEMENTATION,
    pb.CODEX_TASK_STAGE_REVIEW: Stage.REVIEW,
}
_ENUM_BY_STAGE = {stage: number for number, stage in _STAGE_BY_ENUM.items()}


def stage_name(value: int) -> str:
    """The enum name of a stage value, e.g. ``CODEX_TASK_STAGE_PLANNING`` (or the number if unknown)."""
    try:
        return pb.CodexTaskStage.Name(value)
    except ValueError:
        return str(value)


def short_stage_name(value: int) -> str:
    """``PLANNING`` for ``CODEX_TASK_STAGE_PLANNING``."""
    return stage_name(value).removeprefix(_STAGE_PREFIX)


def decode_binary(data: bytes) -> pb.CodexTask:
    """Decode a binary ``CodexTask``; raise :class:`InvalidPayload` naming the problem."""
    if not data:
        raise InvalidPayload("empty payload")
    task = pb.CodexTask()
    try:
        task.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidPayload(f"not a binary proompteng.froussard.v1.CodexTask: {exc}") from exc
    return task


def _normalize_stage(value: Any) -> Any:
    """Accept ``planning``, ``PLANNING`` and ``CODEX_TASK_STAGE_PLANNING`` (and numbers) for ``stage``."""
    if isinstance(value, str) and not value.upper().startswith(_STAGE_PREFIX):
        return _STAGE_PREFIX + value.upper()
    if isinstance(value, str):
        return value.upper()
    return value


def decode_json(data: bytes) -> pb.CodexTask:
    """Decode proto-JSON, or the JSON task message, into a ``CodexTask``.

    Field names may be camelCase or snake_case; ``issueNumber`` may be a number or a string; ``stage`` may be
    the enum name, its short upper- or lower-case form, or the number. Unknown fields are rejected.
    """
    if not data.strip():
        raise InvalidPayload("empty payload")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidPayload("body must be a JSON object (a proto-JSON CodexTask)")
    if "stage" in document:
        document["stage"] = _normalize_stage(document["stage"])
    task = pb.CodexTask()
    try:
        json_format.ParseDict(document, task)
    except json_format.ParseError as exc:
        raise InvalidPayload(f"not a proto-JSON proompteng.froussard.v1.CodexTask: {exc}") from exc
    return task


def to_proto_json(task: pb.CodexTask) -> dict[str, Any]:
    """Canonical proto-JSON (camelCase, int64 as strings, enum names; unset fields omitted)."""
    return json_format.MessageToDict(task)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_task_message(task: pb.CodexTask, *, now: datetime | None = None) -> dict[str, Any]:
    """The JSON task message of ``github.codex.tasks`` (reference §2.9)."""
    stage = _STAGE_BY_ENUM.get(task.stage)
    issued_at = task.issued_at.ToDatetime(tzinfo=UTC) if task.HasField("issued_at") else (now or _utcnow())
    message: dict[str, Any] = {
        "stage": stage.value if stage else short_stage_name(task.stage).lower(),
        "prompt": task.prompt,
        "repository": task.repository,
        "base": task.base,
        "head": task.head,
        "issueNumber": task.issue_number,
        "issueUrl": task.issue_url,
        "issueTitle": task.issue_title,
        "issueBody": task.issue_body,
        "sender": task.sender,
        "issuedAt": _iso(issued_at),
    }
    if task.HasField("plan_comment_id"):
        message["planCommentId"] = task.plan_comment_id
    if task.HasField("plan_comment_url"):
        message["planCommentUrl"] = task.plan_comment_url
    if task.HasField("plan_comment_body"):
        message["planCommentBody"] = task.plan_comment_body
    if task.HasField("review_context"):
        message["reviewContext"] = json_format.MessageToDict(task.review_context)
    return message


def from_task_message(message: dict[str, Any], *, delivery_id: str = "") -> pb.CodexTask:
    """Build the protobuf from a JSON task message (the inverse of :func:`to_task_message`)."""
    document = dict(message)
    if delivery_id:
        document["deliveryId"] = delivery_id
    return decode_json(json.dumps(document).encode())


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedTask:
    """A ``CodexTask`` that passed the checks needed to record it."""

    task: pb.CodexTask
    stage: Stage
    repository: str
    issue_number: int
    delivery_id: str


def accept(task: pb.CodexTask) -> AcceptedTask:
    """Check what Facteur needs to record a task; raise :class:`InvalidInput` naming what is missing."""
    stage = _STAGE_BY_ENUM.get(task.stage)
    if stage is None:
        raise InvalidInput(
            f"unknown stage {stage_name(task.stage)}: expected CODEX_TASK_STAGE_PLANNING, "
            "CODEX_TASK_STAGE_IMPLEMENTATION or CODEX_TASK_STAGE_REVIEW"
        )
    delivery_id = task.delivery_id.strip()
    if not delivery_id:
        raise InvalidInput("missing delivery_id (field 15): it is the idempotency key of the task")
    if len(delivery_id) > 200:
        raise InvalidInput("delivery_id is longer than 200 characters")
    if not is_repository(task.repository):
        raise InvalidInput(f"repository must look like 'owner/name', got {task.repository!r}")
    if task.issue_number <= 0:
        raise InvalidInput(f"issue_number must be a positive number, got {task.issue_number}")
    return AcceptedTask(
        task=task,
        stage=stage,
        repository=task.repository,
        issue_number=task.issue_number,
        delivery_id=delivery_id,
    )


def enum_for(stage: Stage) -> int:
    """The protobuf enum value of a codex stage."""
    return _ENUM_BY_STAGE[stage]
