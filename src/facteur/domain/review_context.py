"""What a review run is told about a pull request: unresolved threads, failing checks, merge state.

The rules follow Froussard's (reference: proompteng-lab.md §2.6, §2.8): a thread is summarised by its last
comment; a check run fails when it completed with a failing conclusion or with none; a commit status fails
when its state is ``failure`` or ``error``; checks are deduplicated by name, the later one winning. The
fingerprint identifies the review request: the same pull request head with the same feedback gives the
same fingerprint, so a repeated request can be recognised (the Kafka key ``pull-<pr>-review-<fp>`` and the
review workflow's name are built from it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from facteur.domain.untrusted import one_line, truncate
from facteur.forge.port import CheckRun, CommitStatus, PullRequest, ReviewThread

THREAD_SUMMARY_LIMIT = 200
THREAD_PATH_LIMIT = 160
CHECK_DETAILS_LIMIT = 240
#: the summary of an unresolved thread that has neither a comment text nor a path
THREAD_NEEDS_ATTENTION = "A review thread needs attention."

#: check-run conclusions that count as failing
FAILING_CONCLUSIONS = frozenset({"failure", "timed_out", "action_required", "cancelled", "stale"})
#: commit-status states that count as failing
FAILING_STATES = frozenset({"failure", "error"})
#: ``mergeable_state`` values that need no attention from the review run
SETTLED_MERGE_STATES = frozenset({"clean", "unstable", "unknown"})
DIRTY = "dirty"
FINGERPRINT_LENGTH = 32

_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class ThreadNote:
    """An unresolved review thread, summarised."""

    summary: str
    url: str | None
    author: str | None


@dataclass(frozen=True, slots=True)
class FailingCheck:
    """A failing check run or commit status."""

    name: str
    conclusion: str | None
    url: str | None
    details: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewContext:
    head_sha: str
    #: the sentence that lists what is outstanding; ``None`` when nothing is
    summary: str | None
    threads: tuple[ThreadNote, ...]
    failing_checks: tuple[FailingCheck, ...]
    additional_notes: tuple[str, ...]
    #: GitHub's ``mergeable_state``, lower-cased; ``None`` when GitHub gave none
    merge_state: str | None
    merge_state_requires_attention: bool
    has_merge_conflicts: bool
    outstanding_work: bool
    force_review: bool
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        """The ``reviewContext`` of the JSON task message (also the ``CodexReviewContext`` proto-JSON)."""
        document: dict[str, Any] = {}
        if self.summary is not None:
            document["summary"] = self.summary
        document["reviewThreads"] = [
            _without_none(summary=t.summary, url=t.url, author=t.author) for t in self.threads
        ]
        document["failingChecks"] = [
            _without_none(name=c.name, conclusion=c.conclusion, url=c.url, details=c.details)
            for c in self.failing_checks
        ]
        if self.additional_notes:
            document["additionalNotes"] = list(self.additional_notes)
        return document


def build_review_context(
    pull: PullRequest,
    threads: Iterable[ReviewThread],
    check_runs: Iterable[CheckRun],
    statuses: Iterable[CommitStatus],
    *,
    force_review: bool = False,
) -> ReviewContext:
    """Fold a pull request's review threads, check runs, commit statuses and merge state into the context of
    a review run."""
    notes = tuple(note for thread in threads if (note := thread_note(thread)) is not None)
    checks = failing_checks(check_runs, statuses)
    merge_state = (pull.mergeable_state or "").strip().lower() or None
    requires_attention = merge_state is not None and merge_state not in SETTLED_MERGE_STATES
    conflicts = merge_state == DIRTY
    outstanding = bool(notes) or bool(checks) or conflicts
    return ReviewContext(
        head_sha=pull.head_sha,
        summary=_summary(len(notes), len(checks), conflicts),
        threads=notes,
        failing_checks=checks,
        additional_notes=_additional_notes(merge_state, requires_attention, conflicts),
        merge_state=merge_state,
        merge_state_requires_attention=requires_attention,
        has_merge_conflicts=conflicts,
        outstanding_work=outstanding,
        force_review=force_review,
        fingerprint=fingerprint(
            head_sha=pull.head_sha,
            outstanding_work=outstanding,
            force_review=force_review,
            merge_state_requires_attention=requires_attention,
            merge_state=merge_state,
            has_merge_conflicts=conflicts,
            threads=notes,
            checks=checks,
        ),
    )


def thread_note(thread: ReviewThread) -> ThreadNote | None:
    """The summary of an unresolved thread (``None`` for a resolved one): its last comment, whitespace
    collapsed, else its path, else a fixed sentence."""
    if thread.is_resolved:
        return None
    body = one_line(thread.body)
    path = one_line(thread.path or "")
    if body:
        summary = truncate(body, THREAD_SUMMARY_LIMIT)
    elif path:
        summary = truncate(path, THREAD_PATH_LIMIT)
    else:
        summary = THREAD_NEEDS_ATTENTION
    return ThreadNote(summary=summary, url=thread.url or None, author=thread.author or None)


def failing_checks(
    check_runs: Iterable[CheckRun], statuses: Iterable[CommitStatus]
) -> tuple[FailingCheck, ...]:
    """The failing check runs, then the failing commit statuses, one per name (a later one replaces an earlier
    one in its place)."""
    by_name: dict[str, FailingCheck] = {}
    for run in check_runs:
        if is_failing_run(run):
            by_name[run.name] = FailingCheck(
                name=run.name,
                conclusion=run.conclusion or None,
                url=run.url or None,
                details=_details(run.summary or run.title),
            )
    for status in statuses:
        if status.state.lower() in FAILING_STATES:
            by_name[status.context] = FailingCheck(
                name=status.context,
                conclusion=status.state.lower(),
                url=status.url or None,
                details=_details(status.description),
            )
    return tuple(by_name.values())


def is_failing_run(run: CheckRun) -> bool:
    """A check run fails when it completed with a failing conclusion or with none, or when it carries a
    failing conclusion before it completed."""
    conclusion = (run.conclusion or "").lower()
    if run.status.lower() == "completed":
        return not conclusion or conclusion in FAILING_CONCLUSIONS
    return conclusion in FAILING_CONCLUSIONS


def fingerprint(
    *,
    head_sha: str,
    outstanding_work: bool,
    force_review: bool,
    merge_state_requires_attention: bool,
    merge_state: str | None,
    has_merge_conflicts: bool,
    threads: Sequence[ThreadNote],
    checks: Sequence[FailingCheck],
) -> str:
    """The first 32 hex digits of the SHA-256 of the canonical JSON of the review request; the order in which
    threads and checks were listed does not matter, nor do case and surrounding spaces in threads."""
    thread_rows = sorted(
        ({"summary": _norm(t.summary), "url": _norm(t.url), "author": _norm(t.author)} for t in threads),
        key=lambda row: (row["summary"], row["url"], row["author"]),
    )
    check_rows = sorted(
        (
            {"name": c.name, "conclusion": c.conclusion or "", "url": c.url or "", "details": c.details or ""}
            for c in checks
        ),
        key=lambda row: (row["name"], row["conclusion"], row["url"], row["details"]),
    )
    document = {
        "headSha": head_sha,
        "outstandingWork": outstanding_work,
        "forceReview": force_review,
        "mergeStateRequiresAttention": merge_state_requires_attention,
        "mergeState": merge_state,
        "hasMergeConflicts": has_merge_conflicts,
        "threads": thread_rows,
        "checks": check_rows,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def review_dedupe_key(repo: str, pr_number: int, comment_id: int, updated_at: str | datetime) -> str:
    """The key under which a ``review`` request comment is remembered: editing the comment changes it."""
    stamp = updated_at if isinstance(updated_at, str) else _github_time(updated_at)
    return f"{repo}#{pr_number}#comment-{comment_id}-{stamp}"


def issue_number_from_branch(branch: str, prefix: str) -> int | None:
    """The issue a branch works on: the digits right after ``prefix``, else the first run of digits
    anywhere in the name, else ``None``."""
    if branch.startswith(prefix) and (match := _DIGITS.match(branch, len(prefix))):
        return int(match.group())
    if match := _DIGITS.search(branch):
        return int(match.group())
    return None


def _details(text: str | None) -> str | None:
    details = one_line(text or "")
    return truncate(details, CHECK_DETAILS_LIMIT) if details else None


def _summary(threads: int, checks: int, conflicts: bool) -> str | None:
    parts: list[str] = []
    if threads:
        parts.append(f"{threads} unresolved review thread{'' if threads == 1 else 's'}")
    if checks:
        parts.append(f"{checks} failing check{'' if checks == 1 else 's'}")
    if conflicts:
        parts.append("merge conflicts detected")
    return f"Outstanding items: {', '.join(parts)}." if parts else None


def _additional_notes(merge_state: str | None, requires_attention: bool, conflicts: bool) -> tuple[str, ...]:
    notes: list[str] = []
    if requires_attention:
        notes.append(f"GitHub reports mergeable_state={merge_state}.")
    if conflicts:
        notes.append("Resolve the merge conflicts with the base branch before anything else.")
    return tuple(notes)


def _norm(value: str | None) -> str:
    return (value or "").strip().lower()


def _without_none(**fields: str | None) -> dict[str, str]:
    return {key: value for key, value in fields.items() if value is not None}


def _github_time(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return moment.strftime(pattern)
