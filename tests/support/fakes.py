"""Deterministic time and identifiers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class SequentialIds:
    """Predictable ids that, like random ones, differ in their first characters."""

    def __init__(self) -> None:
        self.counter = 0

    def new_id(self) -> uuid.UUID:
        self.counter += 1
        return uuid.UUID(int=(self.counter << 96) | 0xFACADE)
