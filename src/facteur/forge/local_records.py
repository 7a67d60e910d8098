"""The local forge's records in one SQLite file (blocking calls, one short transaction each).

Several processes open the file at once (the server and ``facteur stage`` subprocesses): it runs in WAL mode,
every connection waits up to 10 s for a lock, and writes take the lock up front (``BEGIN IMMEDIATE``), so a
transaction never fails half-way for want of it. Issues and pull requests share one number sequence per
repository; comment, review thread, check run and status ids are unique across the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from facteur.errors import ForgeError, ForgeUnavailable
from facteur.forge.port import CheckRun, Comment, CommitStatus, Issue, ReviewThread

SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS issues (
    repo TEXT NOT NULL, number INTEGER NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed')), author TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '[]', is_pull INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (repo, number)
);
CREATE TABLE IF NOT EXISTS pulls (
    repo TEXT NOT NULL, number INTEGER NOT NULL, head_ref TEXT NOT NULL, base_ref TEXT NOT NULL,
    head_sha TEXT NOT NULL, draft INTEGER NOT NULL, merged INTEGER NOT NULL DEFAULT 0,
    merge_sha TEXT, merged_at TEXT,
    PRIMARY KEY (repo, number), FOREIGN KEY (repo, number) REFERENCES issues (repo, number)
);
CREATE INDEX IF NOT EXISTS pulls_by_head ON pulls (repo, head_ref);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, number INTEGER NOT NULL, body TEXT NOT NULL,
    author TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    FOREIGN KEY (repo, number) REFERENCES issues (repo, number)
);
CREATE INDEX IF NOT EXISTS comments_by_issue ON comments (repo, number, id);
CREATE TABLE IF NOT EXISTS reactions (
    repo TEXT NOT NULL, number INTEGER NOT NULL, content TEXT NOT NULL, login TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (repo, number, content, login), FOREIGN KEY (repo, number) REFERENCES issues (repo, number)
);
CREATE TABLE IF NOT EXISTS review_threads (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, number INTEGER NOT NULL, path TEXT,
    body TEXT NOT NULL, author TEXT NOT NULL, resolved INTEGER NOT NULL, created_at TEXT NOT NULL,
    FOREIGN KEY (repo, number) REFERENCES pulls (repo, number)
);
CREATE INDEX IF NOT EXISTS review_threads_by_pull ON review_threads (repo, number, id);
CREATE TABLE IF NOT EXISTS check_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, sha TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, conclusion TEXT, summary TEXT, title TEXT, url TEXT, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_runs_by_sha ON check_runs (repo, sha, id);
CREATE TABLE IF NOT EXISTS commit_statuses (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, sha TEXT NOT NULL, context TEXT NOT NULL,
    state TEXT NOT NULL, description TEXT, url TEXT, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commit_statuses_by_sha ON commit_statuses (repo, sha, id);
"""


# --- URLs ---------------------------------------------------------------------------------------------------


def issue_url(repo: str, number: int, *, is_pull: bool = False) -> str:
    return f"local://{repo}/{'pull' if is_pull else 'issues'}/{number}"


def comment_url(repo: str, number: int, comment_id: int, *, is_pull: bool) -> str:
    return f"{issue_url(repo, number, is_pull=is_pull)}#issuecomment-{comment_id}"


def thread_url(repo: str, number: int, thread_id: int) -> str:
    return f"{issue_url(repo, number, is_pull=True)}#discussion_r{thread_id}"


# --- rows ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PullRow:
    number: int
    title: str
    body: str
    state: str
    author: str
    head_ref: str
    base_ref: str
    head_sha: str
    draft: bool
    merged: bool
    merge_sha: str | None


def _issue(row: sqlite3.Row) -> Issue:
    return Issue(
        number=row["number"],
        title=row["title"],
        body=row["body"],
        state=row["state"],
        author=row["author"],
        url=issue_url(row["repo"], row["number"], is_pull=bool(row["is_pull"])),
        labels=tuple(json.loads(row["labels"])),
        is_pull_request=bool(row["is_pull"]),
    )


def _comment(row: sqlite3.Row) -> Comment:
    return Comment(
        id=row["id"],
        body=row["body"],
        author=row["author"],
        url=comment_url(row["repo"], row["number"], row["id"], is_pull=bool(row["is_pull"])),
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )


def _pull(row: sqlite3.Row) -> PullRow:
    return PullRow(
        number=row["number"],
        title=row["title"],
        body=row["body"],
        state=row["state"],
        author=row["author"],
        head_ref=row["head_ref"],
        base_ref=row["base_ref"],
        head_sha=row["head_sha"],
        draft=bool(row["draft"]),
        merged=bool(row["merged"]),
        merge_sha=row["merge_sha"],
    )


# --- the file -----------------------------------------------------------------------------------------------


class Records:
    """Opens a connection per transaction (connections never cross threads); the schema is created on first
    use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _prepare(self) -> None:
        with self._lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            try:
                _retry_busy(lambda: db.execute("PRAGMA journal_mode = WAL"))
                _begin(db, write=True)
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                found = db.execute("SELECT version FROM schema_version").fetchall()
                if not found:
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            finally:
                db.close()
            if found and found[0][0] > SCHEMA_VERSION:
                raise ForgeError(
                    f"{self.path} has schema version {found[0][0]}, newer than this Facteur knows "
                    f"({SCHEMA_VERSION}); upgrade Facteur"
                )
            self._ready = True

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; writers take the write lock at once. SQLite failures become ForgeError (a lock
        held past the busy timeout, ForgeUnavailable)."""
        try:
            self._prepare()
            db = self._connect()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            _begin(db, write=write)
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._translate(exc) from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _translate(self, exc: sqlite3.Error) -> ForgeError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return ForgeUnavailable(f"the local forge's records ({self.path}) stayed locked: {text}")
        return ForgeError(f"the local forge's records ({self.path}) failed: {text}")


def _begin(db: sqlite3.Connection, *, write: bool) -> None:
    """Open the transaction and take its lock (writers) or its snapshot (readers) now, retrying while the
    file is busy: SQLite answers some lock conflicts at once instead of waiting out the busy timeout (a
    connection of another process checkpointing the WAL as it closes, a stale snapshot), and those are as
    passing as any other."""

    def begin() -> None:
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            if not write:
                db.execute("SELECT version FROM schema_version").fetchall()
        except BaseException:
            db.execute("ROLLBACK")
            raise

    _retry_busy(begin)


def _retry_busy(action: Callable[[], object]) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


# --- issues -------------------------------------------------------------------------------------------------


def insert_issue(
    db: sqlite3.Connection,
    repo: str,
    *,
    title: str,
    body: str,
    labels: tuple[str, ...],
    author: str,
    now: datetime,
    is_pull: bool = False,
) -> int:
    (number,) = db.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM issues WHERE repo = ?", (repo,)
    ).fetchone()
    db.execute(
        "INSERT INTO issues (repo, number, title, body, state, author, labels, is_pull, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
        (
            repo,
            number,
            title,
            body,
            author,
            json.dumps(list(labels)),
            int(is_pull),
            now.isoformat(),
            now.isoformat(),
        ),
    )
    return int(number)


def get_issue(db: sqlite3.Connection, repo: str, number: int) -> Issue | None:
    row = db.execute("SELECT * FROM issues WHERE repo = ? AND number = ?", (repo, number)).fetchone()
    return _issue(row) if row else None


def list_issues(db: sqlite3.Connection, repo: str, state: str) -> list[Issue]:
    rows = db.execute(
        "SELECT * FROM issues WHERE repo = ? AND is_pull = 0 AND (? = 'all' OR state = ?)"
        " ORDER BY number DESC",
        (repo, state, state),
    )
    return [_issue(row) for row in rows]


def set_state(db: sqlite3.Connection, repo: str, number: int, state: str, now: datetime) -> bool:
    done = db.execute(
        "UPDATE issues SET state = ?, updated_at = ? WHERE repo = ? AND number = ?",
        (state, now.isoformat(), repo, number),
    )
    return done.rowcount == 1


# --- comments -----------------------------------------------------------------------------------------------

_COMMENTS = "SELECT c.*, i.is_pull FROM comments c JOIN issues i ON (i.repo, i.number) = (c.repo, c.number)"


def insert_comment(
    db: sqlite3.Connection, repo: str, number: int, body: str, *, author: str, now: datetime
) -> Comment:
    cursor = db.execute(
        "INSERT INTO comments (repo, number, body, author, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (repo, number, body, author, now.isoformat(), now.isoformat()),
    )
    row = db.execute(f"{_COMMENTS} WHERE c.id = ?", (cursor.lastrowid,)).fetchone()
    return _comment(row)


def update_comment(
    db: sqlite3.Connection, repo: str, comment_id: int, body: str, now: datetime
) -> Comment | None:
    db.execute(
        "UPDATE comments SET body = ?, updated_at = ? WHERE repo = ? AND id = ?",
        (body, now.isoformat(), repo, comment_id),
    )
    row = db.execute(f"{_COMMENTS} WHERE c.repo = ? AND c.id = ?", (repo, comment_id)).fetchone()
    return _comment(row) if row else None


def newest_comments(db: sqlite3.Connection, repo: str, number: int, limit: int) -> list[Comment]:
    rows = db.execute(
        f"{_COMMENTS} WHERE c.repo = ? AND c.number = ? ORDER BY c.id DESC LIMIT ?", (repo, number, limit)
    )
    return [_comment(row) for row in rows]


# --- reactions ----------------------------------------------------------------------------------------------


def insert_reaction(
    db: sqlite3.Connection, repo: str, number: int, content: str, *, login: str, now: datetime
) -> None:
    db.execute(
        "INSERT INTO reactions (repo, number, content, login, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (repo, number, content, login, now.isoformat()),
    )


def count_reactions(db: sqlite3.Connection, repo: str, number: int, content: str) -> int:
    (count,) = db.execute(
        "SELECT COUNT(*) FROM reactions WHERE repo = ? AND number = ? AND content = ?",
        (repo, number, content),
    ).fetchone()
    return int(count)


# --- pull requests ------------------------------------------------------------------------------------------

_PULLS = "SELECT i.*, p.* FROM pulls p JOIN issues i ON (i.repo, i.number) = (p.repo, p.number)"


def insert_pull(
    db: sqlite3.Connection,
    repo: str,
    *,
    title: str,
    body: str,
    author: str,
    head_ref: str,
    base_ref: str,
    head_sha: str,
    draft: bool,
    now: datetime,
) -> int:
    number = insert_issue(db, repo, title=title, body=body, labels=(), author=author, now=now, is_pull=True)
    db.execute(
        "INSERT INTO pulls (repo, number, head_ref, base_ref, head_sha, draft) VALUES (?, ?, ?, ?, ?, ?)",
        (repo, number, head_ref, base_ref, head_sha, int(draft)),
    )
    return number


def get_pull(db: sqlite3.Connection, repo: str, number: int) -> PullRow | None:
    row = db.execute(f"{_PULLS} WHERE p.repo = ? AND p.number = ?", (repo, number)).fetchone()
    return _pull(row) if row else None


def list_pulls(db: sqlite3.Connection, repo: str, state: str, head_ref: str | None = None) -> list[PullRow]:
    rows = db.execute(
        f"{_PULLS} WHERE p.repo = ? AND (? = 'all' OR i.state = ?) AND (? IS NULL OR p.head_ref = ?)"
        " ORDER BY p.number DESC",
        (repo, state, state, head_ref, head_ref),
    )
    return [_pull(row) for row in rows]


def set_draft(db: sqlite3.Connection, repo: str, number: int, draft: bool) -> None:
    db.execute("UPDATE pulls SET draft = ? WHERE repo = ? AND number = ?", (int(draft), repo, number))


def mark_merged(
    db: sqlite3.Connection, repo: str, number: int, *, head_sha: str, merge_sha: str, now: datetime
) -> None:
    db.execute(
        "UPDATE pulls SET merged = 1, head_sha = ?, merge_sha = ?, merged_at = ?"
        " WHERE repo = ? AND number = ?",
        (head_sha, merge_sha, now.isoformat(), repo, number),
    )
    set_state(db, repo, number, "closed", now)


# --- review threads -----------------------------------------------------------------------------------------


def insert_thread(
    db: sqlite3.Connection,
    repo: str,
    number: int,
    *,
    body: str,
    path: str | None,
    resolved: bool,
    author: str,
    now: datetime,
) -> int:
    cursor = db.execute(
        "INSERT INTO review_threads (repo, number, path, body, author, resolved, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (repo, number, path, body, author, int(resolved), now.isoformat()),
    )
    return int(cursor.lastrowid or 0)


def set_resolved(db: sqlite3.Connection, repo: str, thread_id: int, resolved: bool) -> bool:
    done = db.execute(
        "UPDATE review_threads SET resolved = ? WHERE repo = ? AND id = ?", (int(resolved), repo, thread_id)
    )
    return done.rowcount == 1


def list_threads(db: sqlite3.Connection, repo: str, number: int) -> list[ReviewThread]:
    rows = db.execute(
        "SELECT * FROM review_threads WHERE repo = ? AND number = ? ORDER BY id", (repo, number)
    )
    return [
        ReviewThread(
            is_resolved=bool(row["resolved"]),
            path=row["path"],
            body=row["body"],
            url=thread_url(repo, number, row["id"]),
            author=row["author"],
        )
        for row in rows
    ]


# --- checks -------------------------------------------------------------------------------------------------

CHECK_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CHECK_CONCLUSIONS = ("success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required")
STATUS_STATES = ("error", "failure", "pending", "success")


def _one_of(what: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ForgeError(f"{what} must be one of {', '.join(allowed)} (got {value!r})")


def check_run(
    name: str, *, status: str, conclusion: str | None, summary: str | None, title: str | None, url: str | None
) -> CheckRun:
    """A check run, once its status and conclusion are GitHub's (a completed run has a conclusion, others
    none)."""
    _one_of("check run status", status, CHECK_STATUSES)
    if status == "completed":
        _one_of("the conclusion of a completed check run", conclusion, CHECK_CONCLUSIONS)
    elif conclusion is not None:
        raise ForgeError(f"a check run {status!r} has no conclusion yet (got {conclusion!r})")
    return CheckRun(name=name, status=status, conclusion=conclusion, url=url, summary=summary, title=title)


def commit_status(context: str, state: str, *, description: str | None, url: str | None) -> CommitStatus:
    _one_of("commit status state", state, STATUS_STATES)
    return CommitStatus(context=context, state=state, description=description, url=url)


def insert_check_run(db: sqlite3.Connection, repo: str, sha: str, run: CheckRun, now: datetime) -> None:
    db.execute(
        "INSERT INTO check_runs (repo, sha, name, status, conclusion, summary, title, url, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (repo, sha, run.name, run.status, run.conclusion, run.summary, run.title, run.url, now.isoformat()),
    )


def list_check_runs(db: sqlite3.Connection, repo: str, sha: str) -> list[CheckRun]:
    rows = db.execute("SELECT * FROM check_runs WHERE repo = ? AND sha = ? ORDER BY id", (repo, sha))
    return [
        CheckRun(
            name=row["name"],
            status=row["status"],
            conclusion=row["conclusion"],
            url=row["url"],
            summary=row["summary"],
            title=row["title"],
        )
        for row in rows
    ]


def insert_status(db: sqlite3.Connection, repo: str, sha: str, status: CommitStatus, now: datetime) -> None:
    db.execute(
        "INSERT INTO commit_statuses (repo, sha, context, state, description, url, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (repo, sha, status.context, status.state, status.description, status.url, now.isoformat()),
    )


def latest_statuses(db: sqlite3.Connection, repo: str, sha: str) -> list[CommitStatus]:
    rows = db.execute(
        "SELECT * FROM commit_statuses WHERE id IN"
        " (SELECT MAX(id) FROM commit_statuses WHERE repo = ? AND sha = ? GROUP BY context) ORDER BY id",
        (repo, sha),
    )
    return [
        CommitStatus(
            context=row["context"], state=row["state"], description=row["description"], url=row["url"]
        )
        for row in rows
    ]
