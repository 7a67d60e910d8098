"""The Forge contract, run against every adapter: GitHubForge over FakeGitHub, and LocalForge.

Each adapter comes with a ``Backdoor``: how a test puts state in the forge behind the port's back (issues,
comments, pull requests, review threads, checks, branches), as people and CI would. The local backdoor
pushes branches with plain git from a clone and writes the other records into the forge's SQLite file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from pydantic import SecretStr

from facteur.errors import ForgeError, ForgeNotFound
from facteur.forge import local_records
from facteur.forge.github import GitHubForge
from facteur.forge.local import LocalForge
from facteur.forge.port import Forge, IssueDraft, MergeMethod, Reaction
from facteur.settings import GitHubSettings
from tests.support.fakes import FakeClock
from tests.support.github_api import FakeGitHub, FakeSleep

REPO = "acme/widgets"


class Backdoor(Protocol):
    def issue(self, title: str, body: str = "", author: str = "octocat") -> int: ...

    def comment(self, number: int, body: str, author: str = "octocat") -> int: ...

    def pull(
        self, head: str, *, draft: bool = False, mergeable_state: str = "clean", title: str = "A change"
    ) -> int:
        """An open pull request from a new branch ``head`` into ``main``."""
        ...

    def close(self, number: int) -> None: ...

    def thread(
        self, number: int, body: str, *, resolved: bool = False, path: str | None = "src/app.py"
    ) -> None: ...

    def check_run(
        self, sha: str, name: str, conclusion: str | None, *, status: str = "completed"
    ) -> None: ...

    def status(self, sha: str, context: str, state: str) -> None: ...

    def branch_sha(self, name: str) -> str | None: ...

    def reaction_count(self, number: int, content: str) -> int: ...


class GitHubBackdoor:
    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake

    def issue(self, title: str, body: str = "", author: str = "octocat") -> int:
        return self.fake.add_issue(REPO, title=title, body=body, author=author).number

    def comment(self, number: int, body: str, author: str = "octocat") -> int:
        return self.fake.add_comment(REPO, number, body, author=author).id

    def pull(
        self, head: str, *, draft: bool = False, mergeable_state: str = "clean", title: str = "A change"
    ) -> int:
        return self.fake.add_pull(
            REPO, head=head, draft=draft, mergeable_state=mergeable_state, title=title
        ).number

    def close(self, number: int) -> None:
        self.fake.repos[REPO].issues[number].state = "closed"

    def thread(
        self, number: int, body: str, *, resolved: bool = False, path: str | None = "src/app.py"
    ) -> None:
        self.fake.add_thread(REPO, number, body=body, resolved=resolved, path=path)

    def check_run(self, sha: str, name: str, conclusion: str | None, *, status: str = "completed") -> None:
        self.fake.add_check_run(
            REPO, sha, name, status=status, conclusion=conclusion, summary=f"{name} summary"
        )

    def status(self, sha: str, context: str, state: str) -> None:
        self.fake.add_status(REPO, sha, context, state, description=f"{context} is {state}")

    def branch_sha(self, name: str) -> str | None:
        return self.fake.repos[REPO].branches.get(name)

    def reaction_count(self, number: int, content: str) -> int:
        return sum(1 for c, _ in self.fake.repos[REPO].reactions.get(number, []) if c == content)


def git(cwd: Path, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="octocat",
        GIT_AUTHOR_EMAIL="octocat@example.com", GIT_COMMITTER_NAME="octocat",
        GIT_COMMITTER_EMAIL="octocat@example.com",
    )  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


class LocalBackdoor:
    """People push to the bare repository from their clone; other records go straight into the SQLite file."""

    def __init__(self, forge: LocalForge, clock: FakeClock, workdir: Path) -> None:
        self.forge = forge
        self.clock = clock
        self.records = local_records.Records(forge.root / "forge.sqlite3")
        self.bare = forge.repository_path(REPO)
        self.clone = workdir / "clone"
        git(workdir, "clone", "--quiet", str(self.bare), str(self.clone))

    def issue(self, title: str, body: str = "", author: str = "octocat") -> int:
        with self.records.transaction(write=True) as db:
            return local_records.insert_issue(
                db, REPO, title=title, body=body, labels=(), author=author, now=self.clock.now()
            )

    def comment(self, number: int, body: str, author: str = "octocat") -> int:
        with self.records.transaction(write=True) as db:
            return local_records.insert_comment(
                db, REPO, number, body, author=author, now=self.clock.now()
            ).id

    def push(self, branch: str, path: str, text: str, *, start: str = "origin/main") -> str:
        """Commit ``path`` with ``text`` on ``branch`` (from ``start``) and push it; the new tip."""
        git(self.clone, "checkout", "--quiet", "-B", branch, start)
        (self.clone / path).write_text(text)
        git(self.clone, "add", path)
        git(self.clone, "commit", "--quiet", "-m", f"{branch}: {path}")
        git(self.clone, "push", "--quiet", "origin", f"{branch}:{branch}")
        git(self.clone, "fetch", "--quiet", "origin")
        return git(self.clone, "rev-parse", "HEAD")

    def pull(
        self, head: str, *, draft: bool = False, mergeable_state: str = "clean", title: str = "A change"
    ) -> int:
        if mergeable_state not in {"clean", "unstable", "dirty"}:
            raise ValueError(f"the local backdoor cannot make a {mergeable_state!r} pull request")
        path = "shared.txt" if mergeable_state == "dirty" else f"{head.replace('/', '-')}.txt"
        sha = self.push(head, path, f"{head}\n")
        if mergeable_state == "dirty":
            self.push("main", path, "main's own version\n")
        elif mergeable_state == "unstable":
            self.forge.add_check_run(REPO, sha, "tests", status="completed", conclusion="failure")
        with self.records.transaction(write=True) as db:
            return local_records.insert_pull(
                db, REPO, title=title, body="", author="octocat", head_ref=head, base_ref="main",
                head_sha=sha, draft=draft, now=self.clock.now(),
            )  # fmt: skip

    def close(self, number: int) -> None:
        with self.records.transaction(write=True) as db:
            assert local_records.set_state(db, REPO, number, "closed", self.clock.now())

    def thread(
        self, number: int, body: str, *, resolved: bool = False, path: str | None = "src/app.py"
    ) -> None:
        self.forge.add_review_thread(REPO, number, body, path=path, resolved=resolved)

    def check_run(self, sha: str, name: str, conclusion: str | None, *, status: str = "completed") -> None:
        self.forge.add_check_run(
            REPO, sha, name, status=status, conclusion=conclusion, summary=f"{name} summary"
        )

    def status(self, sha: str, context: str, state: str) -> None:
        self.forge.add_commit_status(REPO, sha, context, state, description=f"{context} is {state}")

    def branch_sha(self, name: str) -> str | None:
        found = git(self.bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{name}")
        return found or None

    def reaction_count(self, number: int, content: str) -> int:
        with self.records.transaction() as db:
            return local_records.count_reactions(db, REPO, number, content)


@dataclass
class World:
    forge: Forge
    backdoor: Backdoor


@pytest.fixture(params=["github", "local"])
async def world(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "local":
        seed = tmp_path / "seed"
        seed.mkdir()
        (seed / "README.md").write_text("# widgets\n")
        local = LocalForge(tmp_path / "forge", clock=clock)
        local.create_repository(REPO, source=seed)
        try:
            yield World(local, LocalBackdoor(local, clock, tmp_path))
        finally:
            await local.close()
        return
    fake = FakeGitHub(clock=clock)
    fake.add_repo(REPO)
    forge = GitHubForge(
        GitHubSettings(token=SecretStr("test-token")),
        transport=httpx.MockTransport(fake.handle),
        clock=clock,
        sleep=FakeSleep(clock),
    )
    try:
        yield World(forge, GitHubBackdoor(fake))
    finally:
        await forge.close()
    assert fake.violations == []


# --- issues -------------------------------------------------------------------------------------------------


async def test_get_issue(world: World) -> None:
    number = world.backdoor.issue("Add a cache", "Please.", author="alice")
    issue = await world.forge.get_issue(REPO, number)
    assert (issue.number, issue.title, issue.body, issue.state, issue.author) == (
        number, "Add a cache", "Please.", "open", "alice",
    )  # fmt: skip
    assert issue.url.endswith(f"/issues/{number}")
    assert not issue.is_pull_request


async def test_a_pull_request_is_an_issue_too(world: World) -> None:
    number = world.backdoor.pull("feature")
    issue = await world.forge.get_issue(REPO, number)
    assert issue.is_pull_request


async def test_missing_issue_is_not_found(world: World) -> None:
    with pytest.raises(ForgeNotFound, match="#404"):
        await world.forge.get_issue(REPO, 404)


async def test_create_issue_round_trips(world: World) -> None:
    created = await world.forge.create_issue(
        REPO, IssueDraft(title="Plan", body="Steps", labels=("codex", "x"))
    )
    fetched = await world.forge.get_issue(REPO, created.number)
    assert created == fetched
    assert fetched.labels == ("codex", "x")
    assert (fetched.title, fetched.body) == ("Plan", "Steps")


# --- comments -----------------------------------------------------------------------------------------------


async def test_no_comments(world: World) -> None:
    number = world.backdoor.issue("quiet")
    assert await world.forge.list_comments(REPO, number) == []
    assert await world.forge.latest_comment_with(REPO, number, "<!-- x -->") is None


async def test_list_comments_returns_the_newest_newest_first_across_pages(world: World) -> None:
    number = world.backdoor.issue("busy")
    for i in range(250):
        world.backdoor.comment(number, f"comment {i}")
    newest = await world.forge.list_comments(REPO, number)
    assert [c.body for c in newest] == [f"comment {i}" for i in range(249, 149, -1)]
    assert [c.body for c in await world.forge.list_comments(REPO, number, limit=3)] == [
        "comment 249", "comment 248", "comment 247",
    ]  # fmt: skip
    crossing = await world.forge.list_comments(REPO, number, limit=120)
    assert [c.body for c in crossing] == [f"comment {i}" for i in range(249, 129, -1)]
    everything = await world.forge.list_comments(REPO, number, limit=1000)
    assert [c.body for c in everything] == [f"comment {i}" for i in range(249, -1, -1)]
    assert len({c.id for c in everything}) == 250


async def test_list_comments_on_a_single_page(world: World) -> None:
    number = world.backdoor.issue("small")
    for i in range(3):
        world.backdoor.comment(number, f"c{i}", author="bob")
    comments = await world.forge.list_comments(REPO, number)
    assert [c.body for c in comments] == ["c2", "c1", "c0"]
    assert all(c.author == "bob" and c.created_at is not None and c.url for c in comments)


async def test_latest_comment_with_finds_the_newest_marked_comment(world: World) -> None:
    number = world.backdoor.issue("plan")
    world.backdoor.comment(number, "<!-- codex:plan -->\nold plan")
    world.backdoor.comment(number, "<!-- codex:plan -->\nnew plan")
    for i in range(130):
        world.backdoor.comment(number, f"chatter {i}")
    found = await world.forge.latest_comment_with(REPO, number, "<!-- codex:plan -->")
    assert found is None  # the marked comments are older than the newest 100
    for i in range(60):
        world.backdoor.comment(number, f"<!-- codex:plan -->\nplan {i}" if i == 10 else f"more {i}")
    found = await world.forge.latest_comment_with(REPO, number, "<!-- codex:plan -->")
    assert found is not None
    assert found.body.endswith("plan 10")


async def test_create_and_update_comment(world: World) -> None:
    number = world.backdoor.issue("talk")
    created = await world.forge.create_comment(REPO, number, "first draft")
    updated = await world.forge.update_comment(REPO, created.id, "final text")
    assert updated.id == created.id
    assert updated.body == "final text"
    assert [c.body for c in await world.forge.list_comments(REPO, number)] == ["final text"]


async def test_comment_on_missing_issue_or_comment_is_not_found(world: World) -> None:
    with pytest.raises(ForgeNotFound):
        await world.forge.create_comment(REPO, 999, "hello")
    with pytest.raises(ForgeNotFound):
        await world.forge.update_comment(REPO, 987654, "hello")


# --- reactions ----------------------------------------------------------------------------------------------


async def test_reactions_are_idempotent(world: World) -> None:
    number = world.backdoor.issue("react")
    assert not await world.forge.has_reaction(REPO, number, Reaction.PLUS_ONE)
    await world.forge.add_reaction(REPO, number, Reaction.PLUS_ONE)
    await world.forge.add_reaction(REPO, number, Reaction.PLUS_ONE)
    assert await world.forge.has_reaction(REPO, number, Reaction.PLUS_ONE)
    assert not await world.forge.has_reaction(REPO, number, Reaction.EYES)
    assert world.backdoor.reaction_count(number, "+1") == 1


# --- pull requests ------------------------------------------------------------------------------------------


async def test_get_pull(world: World) -> None:
    number = world.backdoor.pull("codex/issue-7-abc", mergeable_state="unstable", title="Fix it")
    pull = await world.forge.get_pull(REPO, number)
    assert (pull.number, pull.title, pull.state, pull.draft, pull.merged) == (
        number,
        "Fix it",
        "open",
        False,
        False,
    )
    assert (pull.head_ref, pull.base_ref) == ("codex/issue-7-abc", "main")
    assert pull.head_sha == world.backdoor.branch_sha("codex/issue-7-abc")
    assert pull.mergeable_state == "unstable"
    with pytest.raises(ForgeNotFound):
        await world.forge.get_pull(REPO, 4242)


async def test_pulls_for_head_filters_by_branch_and_state(world: World) -> None:
    first = world.backdoor.pull("topic")
    world.backdoor.pull("other")
    assert [p.number for p in await world.forge.pulls_for_head(REPO, "topic")] == [first]
    assert await world.forge.pulls_for_head(REPO, "nothing") == []
    world.backdoor.close(first)
    assert await world.forge.pulls_for_head(REPO, "topic") == []
    assert [p.number for p in await world.forge.pulls_for_head(REPO, "topic", state="closed")] == [first]
    assert [p.number for p in await world.forge.pulls_for_head(REPO, "topic", state="all")] == [first]


async def test_draft_pull_lifecycle(world: World) -> None:
    main = world.backdoor.branch_sha("main")
    assert main is not None
    await world.forge.create_branch(REPO, "codex/issue-1-x", main)
    pull = await world.forge.create_draft_pull(REPO, head="codex/issue-1-x", base="main", title="T", body="B")
    assert pull.draft
    assert (pull.head_ref, pull.base_ref, pull.title, pull.body) == ("codex/issue-1-x", "main", "T", "B")
    assert [p.number for p in await world.forge.pulls_for_head(REPO, "codex/issue-1-x")] == [pull.number]

    refused = await world.forge.merge_pull(REPO, pull.number)
    assert not refused.merged
    assert refused.message

    await world.forge.mark_ready(REPO, pull)
    ready = await world.forge.get_pull(REPO, pull.number)
    assert not ready.draft

    stale = await world.forge.merge_pull(REPO, pull.number, expected_head_sha="0" * 40)
    assert not stale.merged
    merged = await world.forge.merge_pull(
        REPO, pull.number, method=MergeMethod.SQUASH, expected_head_sha=ready.head_sha
    )
    assert merged.merged
    assert merged.sha
    after = await world.forge.get_pull(REPO, pull.number)
    assert after.merged
    again = await world.forge.merge_pull(REPO, pull.number)
    assert not again.merged


async def test_merge_refused_on_conflicts(world: World) -> None:
    number = world.backdoor.pull("conflicted", mergeable_state="dirty")
    result = await world.forge.merge_pull(REPO, number)
    assert not result.merged
    assert "not mergeable" in result.message


async def test_draft_pull_from_a_missing_branch_is_refused(world: World) -> None:
    with pytest.raises(ForgeError, match="no-such-branch"):
        await world.forge.create_draft_pull(REPO, head="no-such-branch", base="main", title="T", body="B")


# --- review context -----------------------------------------------------------------------------------------


async def test_review_threads_all_pages(world: World) -> None:
    number = world.backdoor.pull("reviewed")
    for i in range(120):
        world.backdoor.thread(number, f"thread {i}", resolved=i % 3 == 0, path=None if i == 5 else f"f{i}.py")
    threads = await world.forge.review_threads(REPO, number)
    assert [t.body for t in threads] == [f"thread {i}" for i in range(120)]
    assert [t.is_resolved for t in threads] == [i % 3 == 0 for i in range(120)]
    assert threads[5].path is None
    assert threads[6].path == "f6.py"
    assert all(t.url and t.author for t in threads)


async def test_review_threads_of_a_pull_without_threads_or_of_nothing(world: World) -> None:
    number = world.backdoor.pull("quiet")
    assert await world.forge.review_threads(REPO, number) == []
    with pytest.raises(ForgeNotFound):
        await world.forge.review_threads(REPO, 5000)


async def test_check_runs_all_pages(world: World) -> None:
    sha = "a" * 40
    for i in range(230):
        world.backdoor.check_run(sha, f"check {i}", "failure" if i == 200 else "success")
    world.backdoor.check_run(sha, "pending", None, status="in_progress")
    runs = await world.forge.check_runs(REPO, sha)
    assert [r.name for r in runs] == [*(f"check {i}" for i in range(230)), "pending"]
    assert runs[200].conclusion == "failure"
    assert runs[200].summary == "check 200 summary"
    assert (runs[-1].status, runs[-1].conclusion) == ("in_progress", None)
    assert await world.forge.check_runs(REPO, "b" * 40) == []


async def test_commit_statuses(world: World) -> None:
    sha = "c" * 40
    world.backdoor.status(sha, "ci/build", "pending")
    world.backdoor.status(sha, "ci/build", "failure")
    world.backdoor.status(sha, "ci/lint", "success")
    statuses = {s.context: s for s in await world.forge.commit_statuses(REPO, sha)}
    assert {c: s.state for c, s in statuses.items()} == {"ci/build": "failure", "ci/lint": "success"}
    assert statuses["ci/build"].description == "ci/build is failure"
    assert await world.forge.commit_statuses(REPO, "d" * 40) == []


# --- branches -----------------------------------------------------------------------------------------------


async def test_branches(world: World) -> None:
    main = await world.forge.get_branch(REPO, "main")
    assert main is not None
    assert main.name == "main"
    assert main.sha == world.backdoor.branch_sha("main")
    assert await world.forge.get_branch(REPO, "codex/issue-9-new") is None
    created = await world.forge.create_branch(REPO, "codex/issue-9-new", main.sha)
    assert (created.name, created.sha) == ("codex/issue-9-new", main.sha)
    assert await world.forge.get_branch(REPO, "codex/issue-9-new") == created
    with pytest.raises(ForgeError, match="already exists"):
        await world.forge.create_branch(REPO, "codex/issue-9-new", main.sha)
