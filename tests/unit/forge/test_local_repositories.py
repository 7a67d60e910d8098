"""The local forge's repositories and branches: creation from a directory, names, refs."""

from __future__ import annotations

from pathlib import Path

import pytest

from facteur.errors import ForgeError, ForgeNotFound
from facteur.forge.local import LocalForge
from facteur.forge.port import IssueDraft
from facteur.settings import LocalForgeSettings
from tests.support.fakes import FakeClock
from tests.unit.forge.local_support import REPO, Clone, git, seed


def test_create_repository_commits_the_source_files_on_the_default_branch(
    tmp_path: Path, clock: FakeClock
) -> None:
    source = seed(
        tmp_path / "src",
        {"README.md": "hello\n", "pkg/app.py": "print(1)\n", ".gitignore": "*.log\n", "debug.log": "noise\n"},
    )
    forge = LocalForge(tmp_path / "forge", clock=clock)
    bare = forge.create_repository(REPO, source=source, default_branch="trunk")
    assert bare == tmp_path / "forge" / "repos" / "acme" / "widgets.git"
    assert forge.repository_path(REPO) == bare
    assert git(bare, "rev-parse", "--is-bare-repository") == "true"
    files = git(bare, "ls-tree", "-r", "--name-only", "trunk").splitlines()
    assert files == [".gitignore", "README.md", "pkg/app.py"]  # debug.log is ignored
    assert git(bare, "log", "--format=%an %ad %s", "--date=iso-strict", "trunk") == (
        "facteur 2026-11-21T12:00:00+00:00 Initial commit"
    )
    assert git(bare, "symbolic-ref", "HEAD") == "refs/heads/trunk"


def test_create_repository_is_idempotent(tmp_path: Path, clock: FakeClock) -> None:
    forge = LocalForge(tmp_path / "forge", clock=clock)
    first = forge.create_repository(REPO, source=seed(tmp_path / "a", {"a.txt": "a"}))
    tip = git(first, "rev-parse", "main")
    again = forge.create_repository(REPO, source=seed(tmp_path / "b", {"b.txt": "b"}))
    assert again == first
    assert git(first, "rev-parse", "main") == tip
    assert git(first, "ls-tree", "--name-only", "main") == "a.txt"
    assert [p.name for p in first.parent.iterdir()] == ["widgets.git"]  # no building leftovers


async def test_an_empty_repository_has_no_branch_until_someone_pushes(
    tmp_path: Path, clock: FakeClock
) -> None:
    forge = LocalForge(tmp_path / "forge", clock=clock)
    forge.create_repository("acme/empty")
    forge.create_repository("acme/blank", source=seed(tmp_path / "blank", {}))
    assert await forge.get_branch("acme/empty", "main") is None
    assert await forge.get_branch("acme/blank", "main") is None
    clone = Clone(forge, "acme/empty", tmp_path / "clone")
    pushed = clone.push("main", {"x.txt": "x"}, start=None)
    branch = await forge.get_branch("acme/empty", "main")
    assert branch is not None
    assert branch.sha == pushed


def test_create_repository_from_something_that_is_not_a_directory(tmp_path: Path) -> None:
    forge = LocalForge(tmp_path / "forge")
    with pytest.raises(ForgeError, match="not a directory"):
        forge.create_repository(REPO, source=tmp_path / "missing")
    with pytest.raises(ForgeNotFound):
        forge.repository_path(REPO)


@pytest.mark.parametrize(
    "name",
    ["../x", "acme/..", "acme/.", "..", "acme", "acme/", "/widgets", "a/b/c", "acme/w.git", "a b/c", ""],
)
async def test_bad_repository_names_are_refused(tmp_path: Path, name: str) -> None:
    forge = LocalForge(tmp_path / "forge")
    with pytest.raises(ForgeError, match="not named owner/name") as refused:
        forge.create_repository(name)
    assert not isinstance(refused.value, ForgeNotFound)
    with pytest.raises(ForgeError, match="not named owner/name"):
        await forge.get_issue(name, 1)
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "forge" / "repos").exists()


async def test_an_unknown_repository_is_not_found_by_name(forge: LocalForge) -> None:
    with pytest.raises(ForgeNotFound, match="acme/gadgets"):
        await forge.get_issue("acme/gadgets", 1)
    with pytest.raises(ForgeNotFound, match="acme/gadgets"):
        await forge.create_issue("acme/gadgets", IssueDraft(title="t", body="b"))
    with pytest.raises(ForgeNotFound, match="acme/gadgets"):
        await forge.get_branch("acme/gadgets", "main")
    with pytest.raises(ForgeNotFound, match="acme/gadgets"):
        await forge.check_runs("acme/gadgets", "a" * 40)


async def test_branches_are_refs_of_the_bare_repository(forge: LocalForge, clone: Clone) -> None:
    pushed = clone.push("topic", {"t.txt": "t"})
    branch = await forge.get_branch(REPO, "topic")
    assert branch is not None
    assert branch.sha == pushed
    created = await forge.create_branch(REPO, "codex/issue-1", pushed)
    assert clone.tip("codex/issue-1") == created.sha == pushed


async def test_branch_names_are_exact(forge: LocalForge, clone: Clone) -> None:
    clone.push("topic", {"t.txt": "t"})
    for name in ("main^", "main~1", "HEAD", "refs/heads/main", "top*", "-main", ""):
        assert await forge.get_branch(REPO, name) is None, name


async def test_create_branch_refusals(forge: LocalForge) -> None:
    main = await forge.get_branch(REPO, "main")
    assert main is not None
    with pytest.raises(ForgeError, match="no commit"):
        await forge.create_branch(REPO, "new", "f" * 40)
    with pytest.raises(ForgeError, match="no commit"):
        await forge.create_branch(REPO, "new", "main")
    with pytest.raises(ForgeError, match="not a valid branch name"):
        await forge.create_branch(REPO, "bad..name", main.sha)
    with pytest.raises(ForgeError, match="already exists"):
        await forge.create_branch(REPO, "main", main.sha)
    assert await forge.get_branch(REPO, "new") is None


async def test_git_settings_of_the_caller_do_not_leak_in(
    forge: LocalForge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "index"))
    main = await forge.get_branch(REPO, "main")
    assert main is not None
    assert (await forge.create_branch(REPO, "isolated", main.sha)).sha == main.sha


def test_from_settings_uses_the_root(tmp_path: Path) -> None:
    forge = LocalForge.from_settings(LocalForgeSettings(root=tmp_path / "f"))
    assert forge.root == tmp_path / "f"
    assert forge.create_repository(REPO) == tmp_path / "f" / "repos" / "acme" / "widgets.git"


async def test_close_twice(forge: LocalForge) -> None:
    await forge.close()
    await forge.close()
