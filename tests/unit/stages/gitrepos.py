"""Bare repositories made in a test's tmp_path, with commits pushed to them by plain git.

A :class:`Remote` plays origin: tests give it branches and commits (as another user pushing would), and
look at what it holds afterwards. :func:`isolate_git` keeps the machine's git configuration (credential
helpers, hooks, signing, an enclosing repository) out of the tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

#: who commits through :class:`Remote` (the code under test commits as someone else)
OTHER_NAME = "Someone Else"
OTHER_EMAIL = "someone@example.com"

FileContent = str | bytes | None
"""What a file becomes in a commit: text, bytes, or None to delete it."""


def isolate_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT"):
        monkeypatch.delenv(name, raising=False)


def git(*args: str, cwd: Path, check: bool = True) -> str:
    """Run plain git (not the code under test) and return its standard output."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": OTHER_NAME,
        "GIT_AUTHOR_EMAIL": OTHER_EMAIL,
        "GIT_COMMITTER_NAME": OTHER_NAME,
        "GIT_COMMITTER_EMAIL": OTHER_EMAIL,
        "GIT_TERMINAL_PROMPT": "0",
    }
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout


def write_files(root: Path, files: Mapping[str, FileContent]) -> None:
    for name, content in files.items():
        path = root / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


class Remote:
    """A bare repository, and a scratch clone of it through which commits are pushed."""

    def __init__(self, root: Path, name: str = "remote") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{name}.git"
        self._scratch = root / f"{name}-scratch"
        git("init", "--quiet", "--bare", str(self.path), cwd=root)
        git("clone", "--quiet", str(self.path), str(self._scratch), cwd=root)

    @property
    def url(self) -> str:
        return str(self.path)

    def commit(
        self,
        branch: str,
        files: Mapping[str, FileContent],
        *,
        start: str | None = None,
        message: str | None = None,
    ) -> str:
        """Commit ``files`` on ``branch`` and push it; return the commit's sha. A new branch starts from
        the branch ``start``, or with no parent when ``start`` is None."""
        scratch = self._scratch
        git("fetch", "--quiet", "--prune", "origin", cwd=scratch)
        git("reset", "--quiet", "--hard", cwd=scratch, check=False)
        git("clean", "-ffdxq", cwd=scratch)
        if self.sha(branch) is not None:
            git("checkout", "--quiet", "--force", "-B", branch, f"origin/{branch}", cwd=scratch)
        elif start is not None:
            git("checkout", "--quiet", "--force", "-B", branch, f"origin/{start}", cwd=scratch)
        else:
            git("checkout", "--quiet", "--force", "--orphan", branch, cwd=scratch)
            git("rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".", cwd=scratch)
            git("clean", "-ffdxq", cwd=scratch)
        write_files(scratch, files)
        git("add", "--all", cwd=scratch)
        git("commit", "--quiet", "--allow-empty", "-m", message or f"change {', '.join(files)}", cwd=scratch)
        git("push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=scratch)
        return git("rev-parse", "HEAD", cwd=scratch).strip()

    def sha(self, branch: str) -> str | None:
        """The tip of ``branch``, or None when the remote has no such branch."""
        out = git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=self.path, check=False)
        return out.strip() or None

    def delete(self, branch: str) -> None:
        git("update-ref", "-d", f"refs/heads/{branch}", cwd=self.path)

    def files(self, branch: str) -> dict[str, bytes]:
        """Every file of ``branch``'s tip and its content."""
        names = git("ls-tree", "-r", "-z", "--name-only", f"refs/heads/{branch}", cwd=self.path)
        return {
            name: subprocess.run(
                ["git", "show", f"refs/heads/{branch}:{name}"], cwd=self.path, capture_output=True, check=True
            ).stdout
            for name in names.split("\0")
            if name
        }
