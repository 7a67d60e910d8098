"""`facteur audit verify` over a real database: intact, then tampered with in three ways; and page by page."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from facteur.cli import audit
from facteur.clock import SystemClock
from facteur.domain.events import Event, NewEvent
from facteur.store.sql import SqlStore, sqlalchemy_url
from tests.integration.cli.test_cli import facteur


async def seeded(url: str, count: int) -> None:
    store = SqlStore.open(url, clock=SystemClock())
    store.migrate()
    idea = uuid.uuid4()
    for n in range(count):
        await store.append_event(
            NewEvent(kind="test.decision", actor="test", payload={"n": n, "why": "because"}, idea_id=idea)
        )
    await store.close()


def execute(url: str, statement: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


async def test_verify_names_the_first_broken_link(database_url: str, tmp_path: Path) -> None:
    await seeded(database_url, 5)
    env = {"FACTEUR_DATABASE__URL": database_url}

    intact = facteur("audit", "verify", cwd=tmp_path, env=env)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("audit chain intact: 5 event(s), head #5 ")
    report = json.loads(facteur("audit", "verify", "--json", cwd=tmp_path, env=env).stdout)
    assert report["intact"] is True and report["events"] == 5 and report["head"]["seq"] == 5

    # a changed payload
    execute(database_url, 'UPDATE events SET payload = \'{"n": 2, "why": "forged"}\' WHERE seq = 3')
    changed = facteur("audit", "verify", cwd=tmp_path, env=env)
    assert changed.returncode == 1
    assert "broken at event #3: content does not match its hash" in changed.stdout
    report = json.loads(facteur("audit", "verify", "--json", cwd=tmp_path, env=env).stdout)
    assert report["broken"] == {"seq": 3, "reason": "content does not match its hash"}


async def test_verify_catches_removed_events(database_url: str, tmp_path: Path) -> None:
    await seeded(database_url, 4)
    env = {"FACTEUR_DATABASE__URL": database_url}
    execute(database_url, "DELETE FROM events WHERE seq = 4")
    tail = facteur("audit", "verify", cwd=tmp_path, env=env)
    assert tail.returncode == 1
    assert "the chain's head is event #4, but the events end at #3" in tail.stdout

    execute(database_url, "DELETE FROM events WHERE seq = 2")
    middle = facteur("audit", "verify", cwd=tmp_path, env=env)
    assert middle.returncode == 1
    assert "broken at event #3: expected event #2, found #3" in middle.stdout


def test_verify_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {"FACTEUR_DATABASE__URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = facteur("audit", "verify", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "run `facteur migrate` first" in result.stderr


@pytest.fixture
def pages(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Verify two events per page; the list holds the size of each page read."""
    monkeypatch.setattr(audit, "PAGE", 2)
    sizes: list[int] = []
    list_events = SqlStore.list_events

    async def counted(self: SqlStore, **kwargs: Any) -> list[Event]:
        page = await list_events(self, **kwargs)
        assert kwargs["limit"] == 2
        sizes.append(len(page))
        return page

    monkeypatch.setattr(SqlStore, "list_events", counted)
    return sizes


@pytest.mark.parametrize("count", [7, 6])
async def test_verify_reads_page_after_page(database_url: str, pages: list[int], count: int) -> None:
    await seeded(database_url, count)
    verdict = await audit._verify(database_url, 5.0, show_progress=False)
    assert (verdict.broken, verdict.events, verdict.head_seq) == (None, count, count)
    assert pages == ([2, 2, 2, 1] if count == 7 else [2, 2, 2, 0])


async def test_verify_finds_a_break_in_the_second_page(database_url: str, pages: list[int]) -> None:
    await seeded(database_url, 7)
    execute(database_url, 'UPDATE events SET payload = \'{"n": 3, "why": "forged"}\' WHERE seq = 4')
    verdict = await audit._verify(database_url, 5.0, show_progress=False)
    assert verdict.broken is not None
    assert (verdict.broken.seq, verdict.broken.reason) == (4, "content does not match its hash")
    assert verdict.events == 3
    assert pages == [2, 2]


async def test_verify_finds_a_gap_across_pages(database_url: str, pages: list[int]) -> None:
    await seeded(database_url, 7)
    execute(database_url, "DELETE FROM events WHERE seq = 3")
    verdict = await audit._verify(database_url, 5.0, show_progress=False)
    assert verdict.broken is not None
    assert (verdict.broken.seq, verdict.broken.reason) == (4, "expected event #3, found #4")
    assert pages == [2, 2]
