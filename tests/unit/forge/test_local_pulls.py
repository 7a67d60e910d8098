"""The local forge's pull requests: numbering, refusals, mergeable state and real git merges."""

from __future__ import annotations

import asyncio

import pytest

from facteur.errors import ForgeError, ForgeNotFound
from facteur.forge import local_records
from facteur.forge.local import LocalForge
from facteur.forge.port import IssueDraft, MergeMethod, PullRequest
from tests.support.fakes import FakeClock
from tests.unit.forge.local_support import REPO, Clone, git


async def ready_pull(forge: LocalForge, head: str, title: str = "Add a feature") -> PullRequest:
    pull = await forge.create_draft_pull(REPO, head=head, base="main", title=title, body="Why it matters.")
    await forge.mark_ready(REPO, pull)
    return await forge.get_pull(REPO, pull.number)


async def test_issues_and_pull_requests_share_one_sequence(forge: LocalForge, clone: Clone) -> None:
    clone.push("topic", {"t.txt": "t"})
    first = await forge.create_issue(REPO, IssueDraft(title="Bug", body="b"))
    pull = await forge.create_draft_pull(REPO, head="topic", base="main", title="Fix", body="f")
    second = await forge.create_issue(REPO, IssueDraft(title="Idea", body="i"))
    assert (first.number, pull.number, second.number) == (1, 2, 3)
    as_issue = await forge.get_issue(REPO, pull.number)
    assert as_issue.is_pull_request
    assert (as_issue.title, as_issue.author, as_issue.url) == (
        "Fix",
        "facteur",
        "local://acme/widgets/pull/2",
    )
    assert first.url == "local://acme/widgets/issues/1"
    assert [i.number for i in forge.list_issues(REPO)] == [3, 1]
    assert [p.number for p in forge.list_pulls(REPO)] == [2]


async def test_numbers_are_per_repository(forge: LocalForge) -> None:
    forge.create_repository("acme/gadgets")
    await forge.create_issue(REPO, IssueDraft(title="a", body=""))
    other = await forge.create_issue("acme/gadgets", IssueDraft(title="b", body=""))
    assert other.number == 1
    with pytest.raises(ForgeNotFound, match="acme/gadgets#2"):
        await forge.get_issue("acme/gadgets", 2)


async def test_a_draft_pull_reads_its_head_live(forge: LocalForge, clone: Clone) -> None:
    first = clone.push("topic", {"t.txt": "one"})
    pull = await forge.create_draft_pull(REPO, head="topic", base="main", title="T", body="B")
    assert (pull.head_sha, pull.author, pull.node_id, pull.url) == (
        first, "facteur", "", "local://acme/widgets/pull/1",
    )  # fmt: skip
    assert pull.mergeable_state == "draft"
    second = clone.push("topic", {"t.txt": "two"}, start="topic")
    assert (await forge.get_pull(REPO, pull.number)).head_sha == second
    assert [p.head_sha for p in await forge.pulls_for_head(REPO, "topic")] == [second]


async def test_draft_pull_refusals(forge: LocalForge, clone: Clone) -> None:
    clone.push("topic", {"t.txt": "t"})
    with pytest.raises(ForgeError, match="no branch develop"):
        await forge.create_draft_pull(REPO, head="topic", base="develop", title="T", body="B")
    with pytest.raises(ForgeError, match="same branch"):
        await forge.create_draft_pull(REPO, head="main", base="main", title="T", body="B")
    open_one = await forge.create_draft_pull(REPO, head="topic", base="main", title="T", body="B")
    with pytest.raises(ForgeError, match=f"#{open_one.number} from topic is already open"):
        await forge.create_draft_pull(REPO, head="topic", base="main", title="T", body="B")
    assert forge.list_pulls(REPO) == [open_one]
    with pytest.raises(ForgeError, match="state must be"):
        await forge.pulls_for_head(REPO, "topic", state="merged")
    with pytest.raises(ForgeNotFound, match="acme/widgets#9"):
        await forge.mark_ready(REPO, PullRequest(
            number=9, title="", body="", state="open", draft=True, merged=False, head_ref="x", head_sha="",
            base_ref="main", url="",
        ))  # fmt: skip


async def test_mergeable_state_follows_conflicts_and_checks(forge: LocalForge, clone: Clone) -> None:
    head = clone.push("topic", {"README.md": "# widgets, by topic\n"})
    pull = await ready_pull(forge, "topic")
    assert pull.mergeable_state == "clean"
    forge.add_check_run(REPO, head, "tests", status="in_progress", conclusion=None)
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "unstable"
    forge.add_check_run(REPO, head, "lint", status="completed", conclusion="skipped")
    forge.add_commit_status(REPO, head, "ci/build", "success")
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "unstable"  # tests still run
    forge.add_check_run(REPO, head, "tests", status="completed", conclusion="success")
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "clean"  # newest run wins
    forge.add_check_run(REPO, head, "lint", status="completed", conclusion="timed_out")
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "unstable"
    clone.push("main", {"README.md": "# widgets, by main\n"})
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "dirty"


async def test_mergeable_state_with_green_checks_is_clean(forge: LocalForge, clone: Clone) -> None:
    head = clone.push("topic", {"t.txt": "t"})
    pull = await ready_pull(forge, "topic")
    forge.add_check_run(REPO, head, "tests", status="completed", conclusion="success")
    forge.add_commit_status(REPO, head, "ci/build", "pending")
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "unstable"
    forge.add_commit_status(REPO, head, "ci/build", "success")
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "clean"
    git(clone.bare, "update-ref", "-d", "refs/heads/topic")
    gone = await forge.get_pull(REPO, pull.number)
    assert (gone.mergeable_state, gone.head_sha) == ("unknown", head)


async def test_merge_makes_a_merge_commit_on_the_base(forge: LocalForge, clone: Clone) -> None:
    main = clone.tip("main")
    head = clone.push("topic", {"feature.py": "x = 1\n"})
    clone.push("main", {"other.txt": "meanwhile\n"})
    moved = clone.tip("main")
    pull = await ready_pull(forge, "topic", title="Add x")
    result = await forge.merge_pull(REPO, pull.number, expected_head_sha=head)
    assert result.merged
    assert result.sha == clone.tip("main")
    assert clone.parents("main") == [moved, head]
    assert main != moved
    assert clone.show("main", "feature.py") == "x = 1"
    assert clone.show("main", "other.txt") == "meanwhile"
    assert git(clone.bare, "log", "-1", "--format=%an|%s|%b", "main") == (
        "facteur|Merge pull request #1 from acme/topic|Add x"
    )
    after = await forge.get_pull(REPO, pull.number)
    assert (after.merged, after.state, after.head_sha) == (True, "closed", head)
    assert (await forge.get_issue(REPO, pull.number)).state == "closed"
    assert await forge.pulls_for_head(REPO, "topic") == []
    assert [p.number for p in await forge.pulls_for_head(REPO, "topic", state="closed")] == [pull.number]


async def test_squash_makes_one_commit_by_the_pull_author(forge: LocalForge, clone: Clone) -> None:
    clone.push("topic", {"a.txt": "a"})
    clone.push("topic", {"b.txt": "b"}, start="topic")
    main = clone.tip("main")
    pull = await ready_pull(forge, "topic", title="Add a and b")
    result = await forge.merge_pull(REPO, pull.number, method=MergeMethod.SQUASH)
    assert result.merged
    assert clone.parents("main") == [main]
    assert (clone.show("main", "a.txt"), clone.show("main", "b.txt")) == ("a", "b")
    assert (
        git(clone.bare, "log", "-1", "--format=%an|%s|%b", "main")
        == "facteur|Add a and b (#1)|Why it matters."
    )


async def test_a_conflict_names_the_files_and_changes_nothing(forge: LocalForge, clone: Clone) -> None:
    clone.push("topic", {"README.md": "topic\n", "clean.txt": "fine\n", "src/app.py": "topic\n"})
    main = clone.push("main", {"README.md": "main\n", "src/app.py": "main\n"})
    pull = await ready_pull(forge, "topic")
    assert pull.mergeable_state == "dirty"
    result = await forge.merge_pull(REPO, pull.number)
    assert (result.merged, result.sha) == (False, None)
    assert "not mergeable" in result.message
    assert "README.md" in result.message
    assert "src/app.py" in result.message
    assert "clean.txt" not in result.message
    assert clone.tip("main") == main
    still = await forge.get_pull(REPO, pull.number)
    assert (still.state, still.merged) == ("open", False)


async def test_merge_refusals_leave_the_base_alone(forge: LocalForge, clone: Clone) -> None:
    head = clone.push("topic", {"t.txt": "t"})
    main = clone.tip("main")
    pull = await ready_pull(forge, "topic")
    stale = await forge.merge_pull(REPO, pull.number, expected_head_sha="0" * 40)
    assert not stale.merged
    assert head in stale.message
    rebase = await forge.merge_pull(REPO, pull.number, method=MergeMethod.REBASE)
    assert not rebase.merged
    assert "rebase" in rebase.message
    assert clone.tip("main") == main
    with pytest.raises(ForgeNotFound, match="acme/widgets#77"):
        await forge.merge_pull(REPO, 77)


async def test_closed_pull_requests_keep_their_records_and_do_not_merge(
    forge: LocalForge, clone: Clone, clock: FakeClock
) -> None:
    clone.push("topic", {"t.txt": "t"})
    pull = await ready_pull(forge, "topic")
    with local_records.Records(forge.root / "forge.sqlite3").transaction(write=True) as db:
        assert local_records.set_state(db, REPO, pull.number, "closed", clock.now())
    refused = await forge.merge_pull(REPO, pull.number)
    assert not refused.merged
    assert "closed" in refused.message
    assert (await forge.get_pull(REPO, pull.number)).mergeable_state == "unknown"
    assert [p.number for p in forge.list_pulls(REPO, "closed")] == [pull.number]
    assert forge.list_pulls(REPO, "open") == []


async def test_two_forges_merging_one_pull_request_merge_it_once(
    forge: LocalForge, clone: Clone, clock: FakeClock
) -> None:
    clone.push("topic", {"t.txt": "t"})
    pull = await ready_pull(forge, "topic")
    main = clone.tip("main")
    other = LocalForge(forge.root, clock=clock)
    results = await asyncio.gather(*(f.merge_pull(REPO, pull.number) for f in (forge, other, forge, other)))
    assert sorted(r.merged for r in results) == [False, False, False, True]
    assert all("already merged" in r.message for r in results if not r.merged)
    assert clone.parents("main") == [main, pull.head_sha]
