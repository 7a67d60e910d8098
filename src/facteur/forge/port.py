"""The Forge port: what Facteur reads from and does on a code forge.

Repositories are named ``owner/name``. Every method is one logical call (an adapter may page through
several requests); adapters raise :class:`facteur.errors.ForgeNotFound` for a missing repository, issue,
comment, pull request or branch, :class:`facteur.errors.ForgeUnavailable` when the forge cannot answer in
time, and :class:`facteur.errors.ForgeError` for any other refusal, with GitHub's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue:
    number: int
    title: str
    body: str
    state: str
    author: str
    url: str
    labels: tuple[str, ...] = ()
    is_pull_request: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Comment:
    id: int
    body: str
    author: str
    url: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Reaction(StrEnum):
    PLUS_ONE = "+1"
    MINUS_ONE = "-1"
    LAUGH = "laugh"
    CONFUSED = "confused"
    HEART = "heart"
    HOORAY = "hooray"
    ROCKET = "rocket"
    EYES = "eyes"


@dataclass(frozen=True, slots=True, kw_only=True)
class PullRequest:
    number: int
    title: str
    body: str
    state: str
    draft: bool
    merged: bool
    head_ref: str
    head_sha: str
    base_ref: str
    url: str
    #: GitHub's GraphQL node id (needed to mark a draft ready); empty on the local forge
    node_id: str = ""
    #: GitHub's ``mergeable_state`` (``clean``, ``dirty``, ``unstable``, ``blocked``, ``unknown``, …)
    mergeable_state: str | None = None
    author: str = ""


class MergeMethod(StrEnum):
    MERGE = "merge"
    SQUASH = "squash"
    REBASE = "rebase"


@dataclass(frozen=True, slots=True)
class MergeResult:
    merged: bool
    sha: str | None
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewThread:
    """A pull request review thread, summarised by its last comment."""

    is_resolved: bool
    path: str | None
    body: str
    url: str | None
    author: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRun:
    name: str
    status: str
    conclusion: str | None
    url: str | None
    summary: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitStatus:
    context: str
    state: str
    description: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class Branch:
    name: str
    sha: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueDraft:
    title: str
    body: str
    labels: tuple[str, ...] = field(default_factory=tuple)


class Forge(Protocol):
    async def close(self) -> None:
        """Release connections (the adapter is not used afterwards)."""
        ...

    # --- issues ---------------------------------------------------------------------------------------------
    async def get_issue(self, repo: str, number: int) -> Issue: ...

    async def create_issue(self, repo: str, draft: IssueDraft) -> Issue: ...

    # --- comments -------------------------------------------------------------------------------------------
    async def list_comments(self, repo: str, number: int, *, limit: int = 100) -> list[Comment]:
        """The newest ``limit`` comments of an issue or pull request, newest first."""
        ...

    async def latest_comment_with(self, repo: str, number: int, marker: str) -> Comment | None:
        """The newest comment whose body contains ``marker`` (among the newest 100)."""
        ...

    async def create_comment(self, repo: str, number: int, body: str) -> Comment: ...

    async def update_comment(self, repo: str, comment_id: int, body: str) -> Comment: ...

    # --- reactions ------------------------------------------------------------------------------------------
    async def add_reaction(self, repo: str, number: int, content: Reaction) -> None:
        """React to an issue or pull request (idempotent: reacting twice keeps one reaction)."""
        ...

    async def has_reaction(self, repo: str, number: int, content: Reaction) -> bool: ...

    # --- pull requests --------------------------------------------------------------------------------------
    async def get_pull(self, repo: str, number: int) -> PullRequest: ...

    async def pulls_for_head(self, repo: str, head: str, *, state: str = "open") -> list[PullRequest]:
        """Pull requests whose head is branch ``head`` of the repository itself."""
        ...

    async def create_draft_pull(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest: ...

    async def mark_ready(self, repo: str, pull: PullRequest) -> None:
        """Take a draft pull request out of draft."""
        ...

    async def merge_pull(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.MERGE,
        expected_head_sha: str | None = None,
    ) -> MergeResult: ...

    # --- review context -------------------------------------------------------------------------------------
    async def review_threads(self, repo: str, number: int) -> list[ReviewThread]:
        """Every review thread of the pull request (all pages), resolved or not."""
        ...

    async def check_runs(self, repo: str, sha: str) -> list[CheckRun]:
        """Every check run of the commit (all pages)."""
        ...

    async def commit_statuses(self, repo: str, sha: str) -> list[CommitStatus]:
        """The latest status of each context of the commit."""
        ...

    # --- branches -------------------------------------------------------------------------------------------
    async def get_branch(self, repo: str, name: str) -> Branch | None: ...

    async def create_branch(self, repo: str, name: str, sha: str) -> Branch: ...
