"""Time and identifiers, as ports, so that tests can be deterministic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class Ids(Protocol):
    def new_id(self) -> uuid.UUID:
        """A fresh, unique identifier."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class RandomIds:
    def new_id(self) -> uuid.UUID:
        return uuid.uuid4()


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp (``2026-11-21T13:46:00Z``) as an aware datetime, a naive one taken as UTC;
    None if absent, empty or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
