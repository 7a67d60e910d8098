"""Helpers for the local forge's tests: a forge with one repository, and a clone people push from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from facteur.forge.local import LocalForge

REPO = "acme/widgets"


def git(cwd: Path, *args: str) -> str:
    """Run git as a person would (their own identity, no global configuration); its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="alice",
        GIT_AUTHOR_EMAIL="alice@example.com", GIT_COMMITTER_NAME="alice",
        GIT_COMMITTER_EMAIL="alice@example.com",
    )  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


class Clone:
    """A working clone of a local forge repository."""

    def __init__(self, forge: LocalForge, repo: str, where: Path) -> None:
        self.bare = forge.repository_path(repo)
        self.path = where
        git(where.parent, "clone", "--quiet", str(self.bare), str(where))

    def push(self, branch: str, files: dict[str, str], *, start: str | None = "origin/main") -> str:
        """Commit ``files`` on ``branch`` (made from ``start``; a first commit when None), push it; the new
        tip."""
        git(self.path, "fetch", "--quiet", "origin")
        if start is None:
            git(self.path, "checkout", "--quiet", "--orphan", branch)
        else:
            git(self.path, "checkout", "--quiet", "-B", branch, start)
        for name, text in files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(text)
            git(self.path, "add", name)
        git(self.path, "commit", "--quiet", "-m", f"change {', '.join(files)} on {branch}")
        git(self.path, "push", "--quiet", "origin", f"{branch}:{branch}")
        return git(self.path, "rev-parse", "HEAD")

    def tip(self, branch: str) -> str:
        return git(self.bare, "rev-parse", f"refs/heads/{branch}")

    def show(self, revision: str, path: str) -> str:
        return git(self.bare, "show", f"{revision}:{path}")

    def parents(self, revision: str) -> list[str]:
        return git(self.bare, "rev-list", "--parents", "-n", "1", revision).split()[1:]


def seed(where: Path, files: dict[str, str]) -> Path:
    where.mkdir(parents=True)
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    return where
