"""The local forge's records: comments, reactions, threads, checks, the SQLite file, several processes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facteur.errors import ForgeError, ForgeNotFound, ForgeUnavailable
from facteur.forge import local_git, local_records
from facteur.forge.local import LocalForge
from facteur.forge.port import IssueDraft, Reaction
from tests.support.fakes import FakeClock
from tests.unit.forge.local_support import REPO, Clone


async def test_comment_urls_and_times(forge: LocalForge, clone: Clone, clock: FakeClock) -> None:
    issue = await forge.create_issue(REPO, IssueDraft(title="t", body="b"))
    on_issue = await forge.create_comment(REPO, issue.number, "hello")
    clone.push("topic", {"t.txt": "t"})
    pull = await forge.create_draft_pull(REPO, head="topic", base="main", title="T", body="B")
    on_pull = await forge.create_comment(REPO, pull.number, "on the pull")
    assert on_issue.url == f"local://acme/widgets/issues/1#issuecomment-{on_issue.id}"
    assert on_pull.url == f"local://acme/widgets/pull/2#issuecomment-{on_pull.id}"
    assert (on_issue.author, on_issue.created_at, on_issue.updated_at) == (
        "facteur",
        clock.now(),
        clock.now(),
    )
    clock.advance(60)
    edited = await forge.update_comment(REPO, on_issue.id, "hello again")
    assert (edited.created_at, edited.updated_at) == (on_issue.created_at, clock.now())


async def test_a_comment_belongs_to_its_repository(forge: LocalForge) -> None:
    forge.create_repository("acme/gadgets")
    issue = await forge.create_issue(REPO, IssueDraft(title="t", body="b"))
    comment = await forge.create_comment(REPO, issue.number, "mine")
    with pytest.raises(ForgeNotFound, match=f"comment {comment.id} in acme/gadgets"):
        await forge.update_comment("acme/gadgets", comment.id, "stolen")
    assert [c.body for c in await forge.list_comments(REPO, issue.number)] == ["mine"]
    assert await forge.list_comments(REPO, issue.number, limit=0) == []
    with pytest.raises(ForgeNotFound, match="acme/widgets#5"):
        await forge.list_comments(REPO, 5)


async def test_reactions_are_one_per_person_and_content(forge: LocalForge, clock: FakeClock) -> None:
    issue = await forge.create_issue(REPO, IssueDraft(title="t", body="b"))
    bot = LocalForge(forge.root, clock=clock, login="helper-bot")
    assert not await bot.has_reaction(REPO, issue.number, Reaction.EYES)
    await forge.add_reaction(REPO, issue.number, Reaction.EYES)
    await forge.add_reaction(REPO, issue.number, Reaction.EYES)
    await bot.add_reaction(REPO, issue.number, Reaction.EYES)
    assert await bot.has_reaction(REPO, issue.number, Reaction.EYES)
    with sqlite3.connect(forge.root / "forge.sqlite3") as db:
        rows = db.execute("SELECT login FROM reactions ORDER BY login").fetchall()
    db.close()
    assert rows == [("facteur",), ("helper-bot",)]
    with pytest.raises(ForgeNotFound, match="acme/widgets#8"):
        await forge.add_reaction(REPO, 8, Reaction.HEART)


async def test_review_threads_open_and_resolve(forge: LocalForge, clone: Clone) -> None:
    clone.push("topic", {"t.txt": "t"})
    pull = await forge.create_draft_pull(REPO, head="topic", base="main", title="T", body="B")
    first = forge.add_review_thread(REPO, pull.number, "Rename this", path="src/app.py")
    forge.add_review_thread(REPO, pull.number, "Looks odd", resolved=True, author="bob")
    threads = await forge.review_threads(REPO, pull.number)
    assert [(t.body, t.path, t.is_resolved, t.author) for t in threads] == [
        ("Rename this", "src/app.py", False, "reviewer"),
        ("Looks odd", None, True, "bob"),
    ]
    assert threads[0].url == f"local://acme/widgets/pull/1#discussion_r{first}"
    forge.resolve_thread(REPO, first)
    assert [t.is_resolved for t in await forge.review_threads(REPO, pull.number)] == [True, True]
    forge.resolve_thread(REPO, first, resolved=False)
    assert [t.is_resolved for t in await forge.review_threads(REPO, pull.number)] == [False, True]
    with pytest.raises(ForgeNotFound, match="review thread 999"):
        forge.resolve_thread(REPO, 999)


async def test_review_threads_need_a_pull_request(forge: LocalForge) -> None:
    issue = await forge.create_issue(REPO, IssueDraft(title="t", body="b"))
    with pytest.raises(ForgeNotFound, match=f"pull request acme/widgets#{issue.number}"):
        forge.add_review_thread(REPO, issue.number, "nope")
    with pytest.raises(ForgeNotFound, match=f"pull request acme/widgets#{issue.number}"):
        await forge.review_threads(REPO, issue.number)


async def test_check_runs_and_statuses_are_validated(forge: LocalForge) -> None:
    sha = "a" * 40
    with pytest.raises(ForgeError, match="conclusion of a completed check run"):
        forge.add_check_run(REPO, sha, "tests", status="completed", conclusion=None)
    with pytest.raises(ForgeError, match="no conclusion yet"):
        forge.add_check_run(REPO, sha, "tests", status="queued", conclusion="success")
    with pytest.raises(ForgeError, match="check run status"):
        forge.add_check_run(REPO, sha, "tests", status="done", conclusion="success")
    with pytest.raises(ForgeError, match="full commit sha"):
        forge.add_check_run(REPO, "main", "tests", status="queued", conclusion=None)
    with pytest.raises(ForgeError, match="commit status state"):
        forge.add_commit_status(REPO, sha, "ci", "green")
    assert await forge.check_runs(REPO, sha) == []
    forge.add_check_run(
        REPO, sha, "tests", status="completed", conclusion="failure", summary="2 failed", title="Tests",
        url="https://ci.example/1",
    )  # fmt: skip
    forge.add_commit_status(REPO, sha, "ci", "error", "broke", url="https://ci.example/2")
    [run] = await forge.check_runs(REPO, sha)
    assert (run.name, run.conclusion, run.summary, run.title, run.url) == (
        "tests", "failure", "2 failed", "Tests", "https://ci.example/1",
    )  # fmt: skip
    [status] = await forge.commit_statuses(REPO, sha)
    assert (status.state, status.description, status.url) == ("error", "broke", "https://ci.example/2")


def test_the_file_is_in_wal_mode_with_a_schema_version(forge: LocalForge) -> None:
    forge.list_issues(REPO)
    with sqlite3.connect(forge.root / "forge.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    db.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    LocalForge(tmp_path / "f").create_repository(REPO)
    LocalForge(tmp_path / "f").list_issues(REPO)
    with sqlite3.connect(tmp_path / "f" / "forge.sqlite3") as db:
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(ForgeError, match="schema version 99, newer than this Facteur knows"):
        await LocalForge(tmp_path / "f").get_issue(REPO, 1)


async def test_a_lock_held_too_long_is_unavailable(
    forge: LocalForge, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge.list_issues(REPO)
    monkeypatch.setattr(local_records, "BUSY_TIMEOUT_SECONDS", 0.05)
    blocker = sqlite3.connect(forge.root / "forge.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ForgeUnavailable, match="locked"):
            await forge.create_issue(REPO, IssueDraft(title="t", body="b"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await forge.create_issue(REPO, IssueDraft(title="t", body="b"))).number == 1


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from facteur.forge.local import LocalForge
    from facteur.forge.port import IssueDraft, Reaction

    async def main(root: str, who: str) -> None:
        forge = LocalForge(Path(root), login=who)
        for i in range(15):
            issue = await forge.create_issue("acme/widgets", IssueDraft(title=f"{who} {i}", body=""))
            await forge.create_comment("acme/widgets", 1, f"{who} saw {issue.number}")
            await forge.add_reaction("acme/widgets", 1, Reaction.EYES)
        await forge.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_several_processes_share_one_root(forge: LocalForge) -> None:
    await forge.create_issue(REPO, IssueDraft(title="shared", body=""))
    writers = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(forge.root), f"w{n}")
        for n in range(4)
    ]
    codes = await asyncio.gather(*(w.wait() for w in writers))
    assert codes == [0, 0, 0, 0]
    issues = forge.list_issues(REPO)
    assert sorted(i.number for i in issues) == list(range(1, 62))
    assert {i.author for i in issues} == {"facteur", "w0", "w1", "w2", "w3"}
    comments = await forge.list_comments(REPO, 1, limit=1000)
    assert len(comments) == 60
    assert sorted(int(c.body.rsplit(" ", 1)[1]) for c in comments) == list(range(2, 62))
    with sqlite3.connect(forge.root / "forge.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM reactions").fetchone() == (4,)
    db.close()


def test_git_runs_without_the_callers_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".gitconfig").write_text("[user]\n\tname = Mallory\n[core]\n\tpager = less\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_PAGER", "less")
    assert local_git.run(None, "config", "user.name", ok=(0, 1)).returncode == 1
    assert local_git.run(None, "var", "GIT_PAGER").stdout.strip() == "cat"
    plain = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    seen = subprocess.run(
        ["git", "config", "user.name"], capture_output=True, text=True, env=plain, check=False
    )
    assert seen.stdout.strip() == "Mallory"  # the file is there: a git not told to ignore it reads it
