"""Bare git repositories of the local forge, driven with the ``git`` command (blocking calls).

Every command runs non-interactively (no prompt, no pager, ``LC_ALL=C``) and ignores the system and global
git configuration and any ``GIT_*`` variable inherited from the caller, so that the forge behaves the same on
every machine. Merges use ``git merge-tree --write-tree`` (git >= 2.38) and ``git commit-tree``, then move the
base branch with a compare-and-swap ``git update-ref``: no worktree, safe when processes share a repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from facteur.domain.branches import branch_name_problem
from facteur.errors import ForgeError, ForgeUnavailable

#: one part of ``owner/name``: letters, digits, ``.``, ``_`` and ``-`` (not ``.`` or ``..``)
_PART = re.compile(r"[A-Za-z0-9._-]{1,100}")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TIMEOUT_SECONDS = 60.0


def split_repo(repo: str) -> tuple[str, str]:
    """``owner/name`` as its two parts; ForgeError for anything else (path traversal included)."""
    owner, _, name = repo.partition("/")
    for part in (owner, name):
        if not _PART.fullmatch(part) or part in {".", ".."} or part.endswith(".git"):
            raise ForgeError(
                f"repository {repo!r} is not named owner/name "
                "(letters, digits, '.', '_' and '-'; no '..', no '.git' suffix)"
            )
    return owner, name


def is_sha(value: str) -> bool:
    return _SHA.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a commit is by, and when."""

    name: str
    when: datetime

    def env(self, role: str) -> dict[str, str]:
        return {
            f"GIT_{role}_NAME": self.name,
            f"GIT_{role}_EMAIL": f"{self.name}@facteur.invalid",
            f"GIT_{role}_DATE": f"@{int(self.when.timestamp())} +0000",
        }


@dataclass(frozen=True, slots=True)
class MergeTree:
    """What merging ``head`` into ``base`` gives: the merged tree, or the files in conflict."""

    tree: str
    conflicts: tuple[str, ...]


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_PAGER="cat",
        PAGER="cat",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    env.update(extra or {})
    return env


def run(
    git_dir: Path | None, *args: str, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    """Run ``git --git-dir=<git_dir> <args>``; ForgeError (with git's message) for an exit code not in
    ``ok``, ForgeUnavailable when git hangs past a minute."""
    command = ["git", *([f"--git-dir={git_dir}"] if git_dir else []), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=_environment(env), timeout=_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise ForgeError("the local forge needs the git command, which is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ForgeUnavailable(
            f"git {args[0]} in {git_dir} did not finish in {_TIMEOUT_SECONDS:.0f} s"
        ) from exc
    if done.returncode not in ok:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise ForgeError(f"git {args[0]} failed{f' in {git_dir}' if git_dir else ''}: {detail}")
    return done


# --- repositories -------------------------------------------------------------------------------------------


def create_bare(path: Path, *, default_branch: str, source: Path | None, author: Identity) -> bool:
    """Create the bare repository at ``path`` (its files from ``source`` as the first commit); False when it
    already exists. Built next to ``path`` and renamed into place, so concurrent creations do not mix."""
    if path.exists():
        return False
    if source is not None and not source.is_dir():
        raise ForgeError(f"cannot import {source} into {path.name}: it is not a directory")
    check_branch_name(path, default_branch)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        run(building, "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(building))
        if source is not None:
            _import_files(building, source, default_branch, author)
        try:
            building.rename(path)
        except OSError:
            if path.exists():
                return False  # another process won the race
            raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return True


def _import_files(git_dir: Path, source: Path, branch: str, author: Identity) -> None:
    index = git_dir / f"import-{uuid.uuid4().hex}.index"
    try:
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(source)}
        run(git_dir, "add", "--all", env=env)
        listed = run(git_dir, "ls-files", env=env).stdout.strip()
        if not listed:
            return  # nothing to commit: the branch is born with the first push
        tree = run(git_dir, "write-tree", env=env).stdout.strip()
    finally:
        index.unlink(missing_ok=True)
    sha = commit_tree(git_dir, tree, (), "Initial commit", author=author, committer=author)
    run(git_dir, "update-ref", f"refs/heads/{branch}", sha, "")


# --- branches -----------------------------------------------------------------------------------------------


def check_branch_name(git_dir: Path, name: str) -> None:
    problem = branch_name_problem(name)
    if problem is not None:
        raise ForgeError(f"{name!r} is not a valid branch name (in {git_dir.name}): {problem}")


def branch_sha(git_dir: Path, name: str) -> str | None:
    """The commit at the tip of branch ``name``, or None when there is no such branch."""
    if not name or name.startswith("-"):
        return None
    # show-ref takes the exact ref name: no revision syntax (``main^``), no patterns
    done = run(git_dir, "show-ref", "--verify", "--hash", f"refs/heads/{name}", ok=(0, 1, 128))
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and is_sha(sha) else None


def has_commit(git_dir: Path, sha: str) -> bool:
    if not is_sha(sha):
        return False
    return run(git_dir, "cat-file", "-e", f"{sha}^{{commit}}", ok=(0, 1, 128)).returncode == 0


def create_branch(git_dir: Path, name: str, sha: str) -> None:
    """Create branch ``name`` at ``sha``, atomically refusing when it already exists."""
    done = run(git_dir, "update-ref", "--create-reflog", f"refs/heads/{name}", sha, "", ok=(0, 128))
    if done.returncode != 0:
        raise ForgeError(f"branch {name} already exists (or could not be created): {done.stderr.strip()}")


def move_branch(git_dir: Path, name: str, new: str, old: str) -> bool:
    """Move branch ``name`` from ``old`` to ``new``; False when it no longer points at ``old``."""
    return run(git_dir, "update-ref", f"refs/heads/{name}", new, old, ok=(0, 128)).returncode == 0


def is_ancestor(git_dir: Path, ancestor: str, descendant: str) -> bool:
    return run(git_dir, "merge-base", "--is-ancestor", ancestor, descendant, ok=(0, 1)).returncode == 0


# --- merges -------------------------------------------------------------------------------------------------


def merge_tree(git_dir: Path, base: str, head: str) -> MergeTree:
    """Merge ``head`` into ``base`` without a worktree (the tree is written to the object store)."""
    try:
        done = run(
            git_dir, "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", base, head, ok=(0, 1)
        )
    except ForgeUnavailable:
        raise
    except ForgeError as exc:
        raise ForgeError(f"{exc.message} (the local forge merges with git >= 2.38)") from exc
    parts = [part for part in done.stdout.split("\0") if part]
    if not parts:
        raise ForgeError(f"git merge-tree gave no tree for {head} into {base} in {git_dir}")
    tree, *files = parts
    conflicts = tuple(dict.fromkeys(files)) if done.returncode == 1 else ()
    if done.returncode == 1 and not conflicts:
        conflicts = ("(unnamed)",)
    return MergeTree(tree, conflicts)


def commit_tree(
    git_dir: Path, tree: str, parents: tuple[str, ...], message: str, *, author: Identity, committer: Identity
) -> str:
    args = [arg for parent in dict.fromkeys(parents) for arg in ("-p", parent)]
    env = {**author.env("AUTHOR"), **committer.env("COMMITTER")}
    return run(git_dir, "commit-tree", tree, *args, "-m", message, env=env).stdout.strip()
