"""What a stage run reports about itself (``POST /api/v1/runs/{id}/events``): the event types, their
checks, and the per-run token that authorises them.

Bodies are JSON objects ``{id, type, ...}``; ``id`` is the event's idempotency key. Types: ``started``,
``heartbeat``, ``progress`` (``text``, ``checklist``), ``usage`` (``input_tokens``, ``output_tokens``,
``cost_usd``), ``plan`` (``markdown``) and ``completed`` (``outcome`` succeeded or failed, ``summary``,
``artifacts``, ``pull_request``, ``branch``). Every field is checked and named when wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from facteur.errors import InvalidInput

#: longest text fields accepted (summary, progress text, plan markdown)
MAX_TEXT = 200_000
MAX_ID = 200


class ReportType(StrEnum):
    STARTED = "started"
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    USAGE = "usage"
    PLAN = "plan"
    COMPLETED = "completed"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChecklistItem:
    text: str
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReportEvent:
    """One checked event of a run."""

    id: str
    type: ReportType
    text: str | None = None
    checklist: tuple[ChecklistItem, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    markdown: str | None = None
    outcome: Outcome | None = None
    summary: str | None = None
    artifacts: tuple[Any, ...] = field(default_factory=tuple)
    pull_request: str | None = None
    branch: str | None = None


def run_token(secret: bytes, run_id: uuid.UUID) -> str:
    """The token a run presents: HMAC-SHA256 of its id under the callback secret."""
    return hmac.new(secret, str(run_id).encode(), hashlib.sha256).hexdigest()


def token_matches(secret: bytes, run_id: uuid.UUID, presented: str) -> bool:
    return hmac.compare_digest(run_token(secret, run_id).encode(), presented.encode("utf-8", "replace"))


def parse_report(body: Any) -> RunReportEvent:
    """Check a decoded body; raise :class:`InvalidInput` naming the first wrong field."""
    if not isinstance(body, Mapping):
        raise InvalidInput(f"the body must be a JSON object, not {type(body).__name__}")
    event_id = _text(body, "id", required=True, limit=MAX_ID)
    assert event_id is not None
    raw_type = body.get("type")
    try:
        kind = ReportType(str(raw_type))
    except ValueError:
        expected = ", ".join(t.value for t in ReportType)
        raise InvalidInput(f"field 'type' must be one of {expected}, not {raw_type!r}") from None
    if kind is ReportType.PROGRESS:
        return RunReportEvent(
            id=event_id, type=kind, text=_text(body, "text"), checklist=_checklist(body.get("checklist"))
        )
    if kind is ReportType.USAGE:
        return RunReportEvent(
            id=event_id,
            type=kind,
            input_tokens=_count(body, "input_tokens"),
            output_tokens=_count(body, "output_tokens"),
            cost_usd=_cost(body),
        )
    if kind is ReportType.PLAN:
        return RunReportEvent(id=event_id, type=kind, markdown=_text(body, "markdown", required=True))
    if kind is ReportType.COMPLETED:
        raw_outcome = body.get("outcome")
        try:
            outcome = Outcome(str(raw_outcome))
        except ValueError:
            raise InvalidInput(f"field 'outcome' must be succeeded or failed, not {raw_outcome!r}") from None
        artifacts = body.get("artifacts", [])
        if not isinstance(artifacts, list):
            raise InvalidInput("field 'artifacts' must be a list")
        return RunReportEvent(
            id=event_id,
            type=kind,
            outcome=outcome,
            summary=_text(body, "summary"),
            artifacts=tuple(artifacts),
            pull_request=_text(body, "pull_request", limit=500),
            branch=_text(body, "branch", limit=255),
        )
    return RunReportEvent(id=event_id, type=kind)


def _text(body: Mapping[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"field {name!r} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"field {name!r} must be a string")
    if required and not value.strip():
        raise InvalidInput(f"field {name!r} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"field {name!r} is longer than {limit} characters")
    return value


def _count(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**53:
        raise InvalidInput(f"field {name!r} must be a whole number of tokens (0 or more)")
    return value


def _cost(body: Mapping[str, Any]) -> float:
    value = body.get("cost_usd", 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput("field 'cost_usd' must be a number, 0 or more")
    return float(value)


def _checklist(value: Any) -> tuple[ChecklistItem, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput("field 'checklist' must be a list of {text, done}")
    items = []
    for n, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("text"), str):
            raise InvalidInput(f"checklist item {n} must be an object with a string 'text'")
        done = item.get("done", False)
        if not isinstance(done, bool):
            raise InvalidInput(f"checklist item {n}: 'done' must be true or false")
        items.append(ChecklistItem(text=item["text"], done=done))
    return tuple(items)
