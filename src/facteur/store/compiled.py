"""Statements compiled once, executed on the driver's cursor.

The table definitions and statements stay SQLAlchemy Core (one source of SQL for both databases); the hot
write path executes their compiled text directly on the DBAPI cursor, converting values the way
SQLAlchemy's column types store them. That skips SQLAlchemy's per-execution machinery, which costs tens
of microseconds per statement (see bench/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg

#: how SQLAlchemy's DateTime stores a timestamp in SQLite
_SQLITE_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"


def dialect_for(name: str) -> sa.Dialect:
    """The dialect statements are compiled for: named parameters on SQLite, pyformat for psycopg."""
    if name == "sqlite":
        return sqlite.dialect(paramstyle="named")
    dialect: sa.Dialect = postgresql_psycopg.dialect()  # type: ignore[no-untyped-call]
    return dialect


class Compiled:
    """The SQL text of a statement, and the values of the literals it binds."""

    __slots__ = ("defaults", "sql")

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect, columns: Sequence[str] = ()) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(columns) or None)
        self.sql = str(compiled)
        self.defaults = {name: value for name, value in compiled.params.items() if value is not None}

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **values} if self.defaults else dict(values)


class Codec:
    """Values in and out of the driver, stored exactly as SQLAlchemy's column types store them."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def uuid(self, value: UUID | None) -> Any:
        if value is None:
            return None
        return value.hex if self.sqlite else value

    def timestamp(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.strftime(_SQLITE_TIMESTAMP) if self.sqlite else value

    def json(self, value: Any) -> str:
        return json.dumps(value)

    def boolean(self, value: bool) -> Any:
        return int(value) if self.sqlite else value

    def uuid_out(self, value: Any) -> UUID | None:
        if value is None or isinstance(value, UUID):
            return value
        return UUID(hex=str(value))

    def timestamp_out(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def json_out(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    def bytes_out(self, value: Any) -> bytes:
        return bytes(value)
