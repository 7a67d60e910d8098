"""The bootstrap step against real git and local bare repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from facteur.stages.bootstrap import Checkout, StartPoint, bootstrap, same_remote
from facteur.stages.git import Git, GitError, InvalidBranchName, MergeConflict
from tests.unit.stages.gitrepos import Remote, git, isolate_git, write_files


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    origin = Remote(tmp_path / "origin")
    origin.commit("main", {"README.md": "hello\n", ".gitignore": "*.log\n"})
    return origin


@pytest.fixture
def workspace(tmp_path: Path) -> Git:
    return Git(tmp_path / "stage" / "repo", log_file=tmp_path / "stage" / "git.log")


def upstream(repo: Git, branch: str) -> str:
    return git("rev-parse", "--abbrev-ref", f"{branch}@{{upstream}}", cwd=repo.workdir, check=False).strip()


async def test_a_fresh_workspace_is_cloned_and_the_head_starts_from_the_base(
    remote: Remote, workspace: Git
) -> None:
    checkout = await bootstrap(workspace, remote=remote.url, base="main", head="codex/issue-1")
    assert checkout == Checkout(
        base="main",
        head="codex/issue-1",
        sha=remote.sha("main") or "",
        started_from=StartPoint.BASE,
        cloned=True,
    )
    assert await workspace.current_branch() == "codex/issue-1"
    assert (workspace.workdir / "README.md").read_text() == "hello\n"
    assert not await workspace.has_changes()
    assert upstream(workspace, "codex/issue-1") == ""  # not tracking the base


async def test_an_existing_head_branch_is_checked_out_at_origin_s_tip(remote: Remote, workspace: Git) -> None:
    remote.commit("feature", {"a.txt": "one\n"}, start="main")
    tip = remote.commit("feature", {"a.txt": "two\n"})
    checkout = await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    assert checkout.started_from is StartPoint.HEAD
    assert checkout.sha == tip == await workspace.head_sha()
    assert (workspace.workdir / "a.txt").read_text() == "two\n"
    assert upstream(workspace, "feature") == "origin/feature"


async def test_dependencies_are_merged_in_order_and_missing_ones_reported(
    remote: Remote, workspace: Git
) -> None:
    remote.commit("dep/one", {"one.txt": "1\n"}, start="main")
    remote.commit("dep/two", {"two.txt": "2\n"}, start="main")
    checkout = await bootstrap(
        workspace,
        remote=remote.url,
        base="main",
        head="feature",
        dependencies=["dep/one", "dep/gone", "dep/two"],
    )
    assert checkout.started_from is StartPoint.DEPENDENCIES
    assert checkout.merged == ("dep/one", "dep/two")
    assert checkout.missing == ("dep/gone",)
    assert (workspace.workdir / "one.txt").read_text() == "1\n"
    assert (workspace.workdir / "two.txt").read_text() == "2\n"
    subjects = git("log", "--first-parent", "--format=%s", "-3", cwd=workspace.workdir).splitlines()
    assert subjects == [
        "Merge dependency branch 'dep/two' into feature",
        "Merge dependency branch 'dep/one' into feature",
        "change README.md, .gitignore",
    ]
    assert not await workspace.has_changes()


async def test_only_missing_dependencies_leave_the_head_on_the_base(remote: Remote, workspace: Git) -> None:
    checkout = await bootstrap(
        workspace, remote=remote.url, base="main", head="feature", dependencies=["dep/gone"]
    )
    assert checkout.started_from is StartPoint.BASE
    assert checkout.merged == ()
    assert checkout.missing == ("dep/gone",)
    assert checkout.sha == remote.sha("main")


async def test_an_existing_head_is_taken_as_it_is_without_merging_dependencies(
    remote: Remote, workspace: Git
) -> None:
    tip = remote.commit("feature", {"f.txt": "f\n"}, start="main")
    remote.commit("dep/one", {"one.txt": "1\n"}, start="main")
    checkout = await bootstrap(
        workspace, remote=remote.url, base="main", head="feature", dependencies=["dep/one"]
    )
    assert checkout.started_from is StartPoint.HEAD
    assert checkout.merged == ()
    assert checkout.sha == tip
    assert not (workspace.workdir / "one.txt").exists()


async def test_a_conflicting_dependency_is_a_clear_error_and_leaves_the_worktree_clean(
    remote: Remote, workspace: Git
) -> None:
    remote.commit("dep/one", {"shared.txt": "one\n", "one.txt": "1\n"}, start="main")
    remote.commit("dep/two", {"shared.txt": "two\n"}, start="main")
    with pytest.raises(MergeConflict) as caught:
        await bootstrap(
            workspace, remote=remote.url, base="main", head="feature", dependencies=["dep/one", "dep/two"]
        )
    assert caught.value.message == (
        "dependency branch 'dep/two' does not merge cleanly into 'feature' (made of 'main' + 'dep/one'): "
        "both change shared.txt; the merge was aborted"
    )
    assert caught.value.files == ("shared.txt",)
    merge_head = git("rev-parse", "--verify", "--quiet", "MERGE_HEAD", cwd=workspace.workdir, check=False)
    assert merge_head == ""
    assert await workspace.status_porcelain() == ""
    assert (workspace.workdir / "shared.txt").read_text() == "one\n"


async def test_a_dirty_workspace_is_reset_and_picks_up_new_commits(remote: Remote, workspace: Git) -> None:
    await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    write_files(
        workspace.workdir,
        {"README.md": "edited by an earlier attempt\n", "stray.txt": "left behind\n", "build/out.log": "x\n"},
    )
    await workspace.run("add", "stray.txt")
    (workspace.workdir / ".git" / "index.lock").write_text("")  # a git killed mid-command
    tip = remote.commit("main", {"later.txt": "later\n"})

    checkout = await bootstrap(workspace, remote=remote.url, base="main", head="feature")

    assert checkout.cloned is False
    assert checkout.sha == tip
    assert (workspace.workdir / "README.md").read_text() == "hello\n"
    assert (workspace.workdir / "later.txt").read_text() == "later\n"
    assert not (workspace.workdir / "stray.txt").exists()
    assert not (workspace.workdir / "build").exists()
    assert await workspace.status_porcelain() == ""


async def test_a_dirty_workspace_with_a_merge_in_progress_is_cleaned(remote: Remote, workspace: Git) -> None:
    remote.commit("other", {"README.md": "theirs\n"}, start="main")
    await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    write_files(workspace.workdir, {"README.md": "ours\n"})
    await workspace.commit_all("ours")
    await workspace.run("merge", "origin/other", check=False)  # stops on the conflict

    checkout = await bootstrap(workspace, remote=remote.url, base="main", head="feature")

    assert checkout.sha == remote.sha("main")
    merge_head = git("rev-parse", "--verify", "--quiet", "MERGE_HEAD", cwd=workspace.workdir, check=False)
    assert merge_head == ""
    assert await workspace.status_porcelain() == ""


async def test_a_head_deleted_at_origin_is_not_resurrected_from_a_stale_ref(
    remote: Remote, workspace: Git
) -> None:
    remote.commit("feature", {"f.txt": "f\n"}, start="main")
    first = await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    assert first.started_from is StartPoint.HEAD
    remote.delete("feature")

    second = await bootstrap(workspace, remote=remote.url, base="main", head="feature")

    assert second.started_from is StartPoint.BASE
    assert second.sha == remote.sha("main")
    assert not (workspace.workdir / "f.txt").exists()


async def test_a_head_pushed_since_the_last_attempt_is_picked_up(remote: Remote, workspace: Git) -> None:
    await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    tip = remote.commit("feature", {"f.txt": "pushed meanwhile\n"}, start="main")
    checkout = await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    assert checkout.started_from is StartPoint.HEAD
    assert checkout.sha == tip


async def test_a_non_empty_foreign_directory_is_refused_and_left_alone(
    remote: Remote, workspace: Git
) -> None:
    workspace.workdir.mkdir(parents=True)
    write_files(workspace.workdir, {"precious.txt": "mine\n"})
    with pytest.raises(GitError) as caught:
        await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    assert caught.value.message.startswith(
        f"{workspace.workdir} is not empty and is not a checkout of {remote.url} (fatal: not a git repository"
    )
    assert "Facteur does not touch it" in caught.value.message
    assert sorted(p.name for p in workspace.workdir.iterdir()) == ["precious.txt"]


async def test_a_directory_inside_another_repository_is_refused(remote: Remote, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    git("init", "--quiet", cwd=outer)
    write_files(outer, {"sub/keep.txt": "keep\n"})
    git("add", "--all", cwd=outer)
    git("commit", "--quiet", "-m", "outer", cwd=outer)
    write_files(outer, {"sub/draft.txt": "uncommitted\n"})
    with pytest.raises(GitError, match="is not empty and is not a checkout"):
        await bootstrap(Git(outer / "sub"), remote=remote.url, base="main", head="feature")
    assert (outer / "sub" / "draft.txt").read_text() == "uncommitted\n"


async def test_a_checkout_of_another_remote_is_refused(
    remote: Remote, tmp_path: Path, workspace: Git
) -> None:
    other = Remote(tmp_path / "other")
    other.commit("main", {"other.txt": "other\n"})
    await bootstrap(workspace, remote=other.url, base="main", head="feature")
    write_files(workspace.workdir, {"wip.txt": "work in progress\n"})
    with pytest.raises(GitError) as caught:
        await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    assert f"(its origin is {other.url})" in caught.value.message
    assert (workspace.workdir / "wip.txt").exists()


async def test_a_file_in_place_of_the_workspace_is_refused(remote: Remote, workspace: Git) -> None:
    workspace.workdir.parent.mkdir(parents=True)
    workspace.workdir.write_text("not a directory\n")
    with pytest.raises(GitError, match="it is a file"):
        await bootstrap(workspace, remote=remote.url, base="main", head="feature")


async def test_an_empty_directory_is_cloned_into(remote: Remote, workspace: Git) -> None:
    workspace.workdir.mkdir(parents=True)
    checkout = await bootstrap(workspace, remote=remote.url, base="main", head="feature")
    assert checkout.cloned is True
    assert (workspace.workdir / "README.md").exists()


async def test_a_missing_base_is_a_clear_error(remote: Remote, workspace: Git) -> None:
    with pytest.raises(GitError) as caught:
        await bootstrap(workspace, remote=remote.url, base="develop", head="feature")
    assert caught.value.message == f"base branch 'develop' does not exist in {remote.url}"


async def test_an_empty_remote_is_a_clear_error(tmp_path: Path, workspace: Git) -> None:
    empty = Remote(tmp_path / "empty")
    with pytest.raises(GitError) as caught:
        await bootstrap(workspace, remote=empty.url, base="main", head="feature")
    assert caught.value.message == (
        f"the repository {empty.url} is empty: it has no commits, so there is no 'main' to start from"
    )


@pytest.mark.parametrize(
    ("base", "head", "dependencies"),
    [
        ("main", "-x", ()),
        ("main", "a..b", ()),
        ("main", "a b", ()),
        ("main", "x.lock", ()),
        ("main", "", ()),
        ("-x", "feature", ()),
        ("main", "feature", ("ok", "a..b")),
        ("main", "feature", ("--upload-pack=evil",)),
    ],
)
async def test_invalid_branch_names_are_refused_before_any_git_command(
    remote: Remote, tmp_path: Path, base: str, head: str, dependencies: tuple[str, ...]
) -> None:
    log = tmp_path / "git.log"
    repo = Git(tmp_path / "work", log_file=log)
    with pytest.raises(InvalidBranchName, match="invalid branch name"):
        await bootstrap(repo, remote=remote.url, base=base, head=head, dependencies=dependencies)
    assert not log.exists()
    assert not repo.workdir.exists()


async def test_a_single_string_of_dependencies_is_a_programming_error(remote: Remote, workspace: Git) -> None:
    with pytest.raises(TypeError, match="not one string"):
        await bootstrap(workspace, remote=remote.url, base="main", head="feature", dependencies="dep")


async def test_file_urls_and_relative_paths_are_remotes_too(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_url = Git(tmp_path / "by-url")
    url = remote.path.as_uri()
    assert (await bootstrap(by_url, remote=url, base="main", head="feature")).cloned
    assert not (await bootstrap(by_url, remote=url, base="main", head="feature")).cloned

    monkeypatch.chdir(tmp_path)
    by_path = Git(Path("by-path"))
    relative = str(remote.path.relative_to(tmp_path))
    assert (await bootstrap(by_path, remote=relative, base="main", head="feature")).cloned
    assert not (await bootstrap(by_path, remote=relative, base="main", head="feature")).cloned
    assert (tmp_path / "by-path" / "README.md").exists()


def test_same_remote_compares_paths_resolved_and_urls_as_written(tmp_path: Path) -> None:
    (tmp_path / "r.git").mkdir()
    (tmp_path / "link.git").symlink_to(tmp_path / "r.git")
    assert same_remote(str(tmp_path / "r.git"), str(tmp_path / "link.git") + "/")
    assert not same_remote(str(tmp_path / "r.git"), str(tmp_path / "s.git"))
    assert same_remote("https://github.com/o/r.git", "https://github.com/o/r.git/")
    assert not same_remote("https://github.com/o/r.git", "https://github.com/o/other.git")
    assert not same_remote("git@github.com:o/r.git", str(tmp_path / "git@github.com:o/r.git"))
