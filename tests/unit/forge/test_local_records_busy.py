"""SQLite answers some lock conflicts at once ("database is locked" without waiting out the busy timeout:
a stale snapshot, another process's WAL recovery or checkpoint): the local forge's records retry those
until the busy timeout, and nothing else."""

from __future__ import annotations

import sqlite3

import pytest

from facteur.forge import local_records


def test_an_immediate_lock_conflict_is_retried_until_it_passes() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    local_records._retry_busy(action)
    assert len(calls) == 3


def test_other_failures_are_not_retried() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: pulls")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        local_records._retry_busy(action)
    assert len(calls) == 1


def test_a_lock_that_stays_is_given_up_on_at_the_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_records, "BUSY_TIMEOUT_SECONDS", 0.05)
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        local_records._retry_busy(action)
    assert 2 <= len(calls) <= 10
