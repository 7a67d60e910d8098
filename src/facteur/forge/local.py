"""The local forge: the Forge port's embedded default, on one directory of this machine.

``root/forge.sqlite3`` holds the records (issues, comments, reactions, pull requests, review threads, check
runs, commit statuses; see ``local_records``) and ``root/repos/<owner>/<name>.git`` the bare repositories,
whose refs are the branches (see ``local_git``). Several processes may share a root. Port calls run their
blocking work in a thread; the extra methods (``create_repository``, ``list_pulls``, ``add_check_run``, …)
block, so async callers wrap them in ``asyncio.to_thread``. URLs are ``local://<owner>/<name>/issues/<n>``,
``…/pull/<n>``, ``…#issuecomment-<id>`` and ``…/pull/<n>#discussion_r<id>`` (docs/forge.md).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from facteur.clock import Clock, SystemClock
from facteur.errors import ForgeError, ForgeNotFound
from facteur.forge import local_git as git
from facteur.forge import local_records as records
from facteur.forge.local_records import PullRow, Records
from facteur.forge.port import (
    Branch,
    CheckRun,
    Comment,
    CommitStatus,
    Issue,
    IssueDraft,
    MergeMethod,
    MergeResult,
    PullRequest,
    Reaction,
    ReviewThread,
)
from facteur.settings import LocalForgeSettings

T = TypeVar("T")

#: conclusions that leave a pull request ``clean`` rather than ``unstable``
_GREEN = ("success", "neutral", "skipped")
PULL_STATES = ("open", "closed", "all")
_ATTEMPTS = 3


class LocalForge:
    """The Forge port over a local directory of bare git repositories and a SQLite file."""

    def __init__(
        self, root: Path, *, clock: Clock | None = None, default_branch: str = "main", login: str = "facteur"
    ) -> None:
        self.root = root
        self._clock = clock or SystemClock()
        self._default_branch = default_branch
        self._login = login
        self._records = Records(root / "forge.sqlite3")

    @classmethod
    def from_settings(cls, settings: LocalForgeSettings, clock: Clock | None = None) -> LocalForge:
        return cls(settings.root, clock=clock)

    async def close(self) -> None:
        """Nothing is held between calls (each opens and closes its connection): safe to call again."""

    # --- plumbing -------------------------------------------------------------------------------------------
    def repository_path(self, repo: str) -> Path:
        """The bare repository of ``repo`` (a clone URL for git); ForgeNotFound when it does not exist."""
        path = self._path(repo)
        if not (path / "HEAD").is_file():
            raise ForgeNotFound(f"the local forge has no repository {repo} (no {path})")
        return path

    def _path(self, repo: str) -> Path:
        owner, name = git.split_repo(repo)
        return self.root / "repos" / owner / f"{name}.git"

    def _who(self, name: str | None = None) -> git.Identity:
        return git.Identity(name or self._login, self._clock.now())

    # --- repositories ---------------------------------------------------------------------------------------
    def create_repository(
        self, repo: str, *, source: Path | None = None, default_branch: str | None = None
    ) -> Path:
        """Create the bare repository of ``repo`` (with ``source``'s files, ``.gitignore`` honoured, as the
        first commit of ``default_branch``) and return its path; an existing repository is returned as is."""
        path = self._path(repo)
        branch = default_branch or self._default_branch
        git.create_bare(path, default_branch=branch, source=source, author=self._who())
        return self.repository_path(repo)

    # --- issues ---------------------------------------------------------------------------------------------
    async def get_issue(self, repo: str, number: int) -> Issue:
        return await asyncio.to_thread(self._get_issue, repo, number)

    def _get_issue(self, repo: str, number: int) -> Issue:
        self.repository_path(repo)
        with self._records.transaction() as db:
            return _found(records.get_issue(db, repo, number), f"issue {repo}#{number}")

    async def create_issue(self, repo: str, draft: IssueDraft) -> Issue:
        return await asyncio.to_thread(self._create_issue, repo, draft)

    def _create_issue(self, repo: str, draft: IssueDraft) -> Issue:
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            number = records.insert_issue(
                db,
                repo,
                title=draft.title,
                body=draft.body,
                labels=draft.labels,
                author=self._login,
                now=self._clock.now(),
            )
            return _found(records.get_issue(db, repo, number), f"issue {repo}#{number}")

    def list_issues(self, repo: str, state: str = "all") -> list[Issue]:
        """The repository's issues (not its pull requests: see ``list_pulls``), newest first."""
        self.repository_path(repo)
        with self._records.transaction() as db:
            return records.list_issues(db, repo, _state(state))

    # --- comments -------------------------------------------------------------------------------------------
    async def list_comments(self, repo: str, number: int, *, limit: int = 100) -> list[Comment]:
        return await asyncio.to_thread(self._list_comments, repo, number, limit)

    def _list_comments(self, repo: str, number: int, limit: int) -> list[Comment]:
        with self._issue_transaction(repo, number) as db:
            return records.newest_comments(db, repo, number, max(limit, 0))

    async def latest_comment_with(self, repo: str, number: int, marker: str) -> Comment | None:
        newest = await self.list_comments(repo, number, limit=100)
        return next((comment for comment in newest if marker in comment.body), None)

    async def create_comment(self, repo: str, number: int, body: str) -> Comment:
        return await asyncio.to_thread(self._create_comment, repo, number, body)

    def _create_comment(self, repo: str, number: int, body: str) -> Comment:
        with self._issue_transaction(repo, number, write=True) as db:
            return records.insert_comment(db, repo, number, body, author=self._login, now=self._clock.now())

    async def update_comment(self, repo: str, comment_id: int, body: str) -> Comment:
        return await asyncio.to_thread(self._update_comment, repo, comment_id, body)

    def _update_comment(self, repo: str, comment_id: int, body: str) -> Comment:
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            updated = records.update_comment(db, repo, comment_id, body, self._clock.now())
            return _found(updated, f"comment {comment_id} in {repo}")

    # --- reactions ------------------------------------------------------------------------------------------
    async def add_reaction(self, repo: str, number: int, content: Reaction) -> None:
        await asyncio.to_thread(self._add_reaction, repo, number, content)

    def _add_reaction(self, repo: str, number: int, content: Reaction) -> None:
        with self._issue_transaction(repo, number, write=True) as db:
            records.insert_reaction(db, repo, number, content.value, login=self._login, now=self._clock.now())

    async def has_reaction(self, repo: str, number: int, content: Reaction) -> bool:
        return await asyncio.to_thread(self._has_reaction, repo, number, content)

    def _has_reaction(self, repo: str, number: int, content: Reaction) -> bool:
        with self._issue_transaction(repo, number) as db:
            return records.count_reactions(db, repo, number, content.value) > 0

    @contextmanager
    def _issue_transaction(
        self, repo: str, number: int, *, write: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """A transaction on the records, once issue (or pull request) ``number`` is known to exist."""
        self.repository_path(repo)
        with self._records.transaction(write=write) as db:
            _found(records.get_issue(db, repo, number), f"issue {repo}#{number}")
            yield db

    # --- pull requests --------------------------------------------------------------------------------------
    async def get_pull(self, repo: str, number: int) -> PullRequest:
        return await asyncio.to_thread(self._get_pull, repo, number)

    def _get_pull(self, repo: str, number: int) -> PullRequest:
        git_dir = self.repository_path(repo)
        with self._records.transaction() as db:
            row = _found(records.get_pull(db, repo, number), f"pull request {repo}#{number}")
            return self._pull(db, git_dir, repo, row)

    async def pulls_for_head(self, repo: str, head: str, *, state: str = "open") -> list[PullRequest]:
        return await asyncio.to_thread(self.list_pulls, repo, state, head=head)

    def list_pulls(self, repo: str, state: str = "all", *, head: str | None = None) -> list[PullRequest]:
        """The repository's pull requests (from branch ``head`` only, when given), newest first."""
        git_dir = self.repository_path(repo)
        with self._records.transaction() as db:
            rows = records.list_pulls(db, repo, _state(state), head)
            return [self._pull(db, git_dir, repo, row) for row in rows]

    async def create_draft_pull(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        return await asyncio.to_thread(self._create_draft_pull, repo, head, base, title, body)

    def _create_draft_pull(self, repo: str, head: str, base: str, title: str, body: str) -> PullRequest:
        git_dir = self.repository_path(repo)
        refused = f"cannot open a pull request from {head} into {base} in {repo}"
        head_sha = git.branch_sha(git_dir, head)
        if head_sha is None:
            raise ForgeError(f"{refused}: there is no branch {head}")
        if git.branch_sha(git_dir, base) is None:
            raise ForgeError(f"{refused}: there is no branch {base}")
        if head == base:
            raise ForgeError(f"{refused}: head and base are the same branch")
        with self._records.transaction(write=True) as db:
            if already := records.list_pulls(db, repo, "open", head):
                raise ForgeError(f"{refused}: pull request #{already[0].number} from {head} is already open")
            number = records.insert_pull(
                db,
                repo,
                title=title,
                body=body,
                author=self._login,
                head_ref=head,
                base_ref=base,
                head_sha=head_sha,
                draft=True,
                now=self._clock.now(),
            )
            row = _found(records.get_pull(db, repo, number), f"pull request {repo}#{number}")
            return self._pull(db, git_dir, repo, row)

    async def mark_ready(self, repo: str, pull: PullRequest) -> None:
        await asyncio.to_thread(self._mark_ready, repo, pull.number)

    def _mark_ready(self, repo: str, number: int) -> None:
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            _found(records.get_pull(db, repo, number), f"pull request {repo}#{number}")
            records.set_draft(db, repo, number, False)

    async def merge_pull(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.MERGE,
        expected_head_sha: str | None = None,
    ) -> MergeResult:
        return await asyncio.to_thread(self._merge_pull, repo, number, method, expected_head_sha)

    def _merge_pull(
        self, repo: str, number: int, method: MergeMethod, expected_head_sha: str | None
    ) -> MergeResult:
        git_dir = self.repository_path(repo)
        name = f"{repo}#{number}"
        # The write lock is held through the merge: two merges of one pull request cannot both land.
        with self._records.transaction(write=True) as db:
            pull = _found(records.get_pull(db, repo, number), f"pull request {name}")
            if pull.merged:
                return _refused(f"{name} is already merged")
            if pull.state != "open":
                return _refused(f"{name} is closed")
            if pull.draft:
                return _refused(f"{name} is not mergeable: it is a draft (mark it ready for review first)")
            if method is MergeMethod.REBASE:
                return _refused(f"the local forge does not rebase-merge ({name}): use merge or squash")
            for _ in range(_ATTEMPTS):
                head_sha = git.branch_sha(git_dir, pull.head_ref)
                base_sha = git.branch_sha(git_dir, pull.base_ref)
                if head_sha is None or base_sha is None:
                    missing = pull.head_ref if head_sha is None else pull.base_ref
                    return _refused(f"{name} is not mergeable: branch {missing} no longer exists")
                if expected_head_sha and expected_head_sha != head_sha:
                    return _refused(
                        f"the head of {name} moved to {head_sha} (expected {expected_head_sha}): "
                        "review and try the merge again"
                    )
                merged = git.merge_tree(git_dir, base_sha, head_sha)
                if merged.conflicts:
                    files = ", ".join(merged.conflicts)
                    return _refused(
                        f"{name} is not mergeable: {pull.head_ref} conflicts with {pull.base_ref} in {files}"
                    )
                sha = self._merge_commit(
                    git_dir, repo, pull, method, tree=merged.tree, base=base_sha, head=head_sha
                )
                if git.move_branch(git_dir, pull.base_ref, sha, base_sha):
                    records.mark_merged(
                        db, repo, number, head_sha=head_sha, merge_sha=sha, now=self._clock.now()
                    )
                    return MergeResult(merged=True, sha=sha, message=f"{name} merged into {pull.base_ref}")
            return _refused(f"{pull.base_ref} kept moving while {name} was merged: try again")

    def _merge_commit(
        self, git_dir: Path, repo: str, pull: PullRow, method: MergeMethod, *, tree: str, base: str, head: str
    ) -> str:
        committer = self._who()
        if method is MergeMethod.SQUASH:
            message = f"{pull.title} (#{pull.number})\n\n{pull.body}".strip()
            return git.commit_tree(
                git_dir, tree, (base,), message, author=self._who(pull.author), committer=committer
            )
        owner, _ = git.split_repo(repo)
        message = f"Merge pull request #{pull.number} from {owner}/{pull.head_ref}\n\n{pull.title}".strip()
        return git.commit_tree(git_dir, tree, (base, head), message, author=committer, committer=committer)

    def _pull(self, db: sqlite3.Connection, git_dir: Path, repo: str, row: PullRow) -> PullRequest:
        live = None if row.merged else git.branch_sha(git_dir, row.head_ref)
        head_sha = live or row.head_sha
        return PullRequest(
            number=row.number,
            title=row.title,
            body=row.body,
            state=row.state,
            draft=row.draft,
            merged=row.merged,
            head_ref=row.head_ref,
            head_sha=head_sha,
            base_ref=row.base_ref,
            url=records.issue_url(repo, row.number, is_pull=True),
            mergeable_state=self._mergeable_state(db, git_dir, repo, row, live),
            author=row.author,
        )

    def _mergeable_state(
        self, db: sqlite3.Connection, git_dir: Path, repo: str, row: PullRow, head_sha: str | None
    ) -> str:
        """As GitHub says it: ``draft``; ``dirty`` (conflicts); ``unstable`` (the newest check run of a name,
        or the latest status of a context, of the head is not green); ``clean``; ``unknown`` when closed or a
        branch is gone."""
        if row.state != "open":
            return "unknown"
        if row.draft:
            return "draft"
        base_sha = git.branch_sha(git_dir, row.base_ref)
        if head_sha is None or base_sha is None:
            return "unknown"
        try:
            if git.merge_tree(git_dir, base_sha, head_sha).conflicts:
                return "dirty"
        except ForgeError:
            return "unknown"
        # the newest run of each name counts (a re-run replaces a failure)
        runs = {run.name: run for run in records.list_check_runs(db, repo, head_sha)}.values()
        statuses = records.latest_statuses(db, repo, head_sha)
        if any(run.conclusion not in _GREEN for run in runs) or any(s.state != "success" for s in statuses):
            return "unstable"
        return "clean"

    # --- review context -------------------------------------------------------------------------------------
    async def review_threads(self, repo: str, number: int) -> list[ReviewThread]:
        return await asyncio.to_thread(self._review_threads, repo, number)

    def _review_threads(self, repo: str, number: int) -> list[ReviewThread]:
        self.repository_path(repo)
        with self._records.transaction() as db:
            _found(records.get_pull(db, repo, number), f"pull request {repo}#{number}")
            return records.list_threads(db, repo, number)

    def add_review_thread(
        self,
        repo: str,
        number: int,
        body: str,
        *,
        path: str | None = None,
        resolved: bool = False,
        author: str = "reviewer",
    ) -> int:
        """Open a review thread on pull request ``number``; its id (for ``resolve_thread``)."""
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            _found(records.get_pull(db, repo, number), f"pull request {repo}#{number}")
            return records.insert_thread(
                db,
                repo,
                number,
                body=body,
                path=path,
                resolved=resolved,
                author=author,
                now=self._clock.now(),
            )

    def resolve_thread(self, repo: str, thread_id: int, *, resolved: bool = True) -> None:
        """Resolve (or, with ``resolved=False``, reopen) a review thread."""
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            if not records.set_resolved(db, repo, thread_id, resolved):
                raise ForgeNotFound(f"the local forge has no review thread {thread_id} in {repo}")

    async def check_runs(self, repo: str, sha: str) -> list[CheckRun]:
        return await asyncio.to_thread(self._read_sha, records.list_check_runs, repo, sha)

    async def commit_statuses(self, repo: str, sha: str) -> list[CommitStatus]:
        return await asyncio.to_thread(self._read_sha, records.latest_statuses, repo, sha)

    def _read_sha(
        self, read: Callable[[sqlite3.Connection, str, str], list[T]], repo: str, sha: str
    ) -> list[T]:
        self.repository_path(repo)
        with self._records.transaction() as db:
            return read(db, repo, sha)

    def add_check_run(
        self,
        repo: str,
        sha: str,
        name: str,
        *,
        status: str,
        conclusion: str | None,
        summary: str | None = None,
        title: str | None = None,
        url: str | None = None,
    ) -> None:
        """Record a check run of commit ``sha`` (a completed run has a conclusion, others none)."""
        _check_sha(sha)
        run = records.check_run(
            name, status=status, conclusion=conclusion, summary=summary, title=title, url=url
        )
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            records.insert_check_run(db, repo, sha, run, self._clock.now())

    def add_commit_status(
        self,
        repo: str,
        sha: str,
        context: str,
        state: str,
        description: str | None = None,
        *,
        url: str | None = None,
    ) -> None:
        """Record a status of commit ``sha``; the latest one of each context counts."""
        _check_sha(sha)
        status = records.commit_status(context, state, description=description, url=url)
        self.repository_path(repo)
        with self._records.transaction(write=True) as db:
            records.insert_status(db, repo, sha, status, self._clock.now())

    # --- branches -------------------------------------------------------------------------------------------
    async def get_branch(self, repo: str, name: str) -> Branch | None:
        return await asyncio.to_thread(self._get_branch, repo, name)

    def _get_branch(self, repo: str, name: str) -> Branch | None:
        sha = git.branch_sha(self.repository_path(repo), name)
        return Branch(name, sha) if sha else None

    async def create_branch(self, repo: str, name: str, sha: str) -> Branch:
        return await asyncio.to_thread(self._create_branch, repo, name, sha)

    def _create_branch(self, repo: str, name: str, sha: str) -> Branch:
        git_dir = self.repository_path(repo)
        git.check_branch_name(git_dir, name)
        if git.branch_sha(git_dir, name) is not None:
            raise ForgeError(f"branch {name} already exists in {repo}")
        if not git.has_commit(git_dir, sha):
            raise ForgeError(f"cannot create branch {name} in {repo}: there is no commit {sha!r}")
        git.create_branch(git_dir, name, sha)
        return Branch(name, sha)


def _found(value: T | None, what: str) -> T:
    if value is None:
        raise ForgeNotFound(f"the local forge has no {what}")
    return value


def _refused(message: str) -> MergeResult:
    return MergeResult(merged=False, sha=None, message=message)


def _state(state: str) -> str:
    if state not in PULL_STATES:
        raise ForgeError(f"state must be open, closed or all (got {state!r})")
    return state


def _check_sha(sha: str) -> None:
    if not git.is_sha(sha):
        raise ForgeError(f"{sha!r} is not a full commit sha (40 or 64 lowercase hex digits)")
