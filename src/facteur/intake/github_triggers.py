"""Which GitHub deliveries start codex stages, and which are recorded and ignored (reference §2.4 to §2.7,
ARCHITECTURE.md §7). Pure: a delivery and the trigger settings in, a decision out; nothing here calls GitHub.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from facteur.domain.ideas import is_repository
from facteur.domain.untrusted import PLAN_MARKER, is_placeholder
from facteur.intake.github_delivery import WebhookDelivery
from facteur.settings import CodexSettings

INT64_MAX = 2**63 - 1
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]{5,20}(Z|[+-]\d{2}:?\d{2})?")

#: comment author associations allowed to ask for a review
REVIEW_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
#: ``pull_request`` actions whose activity is evaluated (undraft, ready-to-merge comment)
PULL_ACTIVITY_ACTIONS = frozenset(
    {
        "opened",
        "ready_for_review",
        "synchronize",
        "reopened",
        "edited",
        "converted_to_draft",
        "review_requested",
        "review_request_removed",
    }
)
PULL_REVIEW_ACTIONS = frozenset({"submitted", "edited", "dismissed"})


def normalize_login(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    login = value.strip().lower()
    return login or None


def sanitize_branch_component(value: str) -> str:
    """Lower-case, runs of anything but ``[a-z0-9]`` become ``-``, no leading or trailing ``-``."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return cleaned or "task"


def branch_name(prefix: str, issue_number: int, delivery_id: str) -> str:
    """``<prefix><issue>-<first 8 characters of the sanitized delivery id>`` (random when empty)."""
    suffix = sanitize_branch_component(delivery_id)[:8] if delivery_id.strip() else ""
    if not suffix:
        alphabet = string.ascii_lowercase + string.digits
        suffix = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{prefix}{issue_number}-{suffix}"


def review_pattern(handle: str) -> re.Pattern[str]:
    """``@<handle> review``: case-insensitive, after start or whitespace, before a boundary or punctuation."""
    return re.compile(rf"(?:^|\s)@{re.escape(handle)}\s+review(?![\w-])", re.IGNORECASE)


# --- decisions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueRef:
    repository: str
    number: int
    title: str
    body: str
    url: str
    base: str
    sender: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanningTrigger:
    issue: IssueRef
    #: issues.edited of an idea-spec issue (planning waits for a valid spec)
    edited: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanComment:
    id: int
    url: str
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImplementationTrigger:
    issue: IssueRef
    #: the plan, when the triggering comment carries it; else the latest plan comment is looked up
    plan: PlanComment | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewTrigger:
    repository: str
    pull_number: int
    comment_id: int
    comment_updated_at: str
    sender: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PullActivity:
    repository: str
    pull_number: int
    action: str
    #: from ``pull_request_review``: the action filter does not apply
    from_review: bool


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str
    #: True when the delivery looked like a trigger but a rule refused it (recorded as an audit event)
    refused_trigger: bool = False


Decision = PlanningTrigger | ImplementationTrigger | ReviewTrigger | PullActivity | Ignored


def decide(delivery: WebhookDelivery, codex: CodexSettings) -> Decision:
    """What a delivery asks for, checked against the trust rules."""
    event, action, payload = delivery.event, delivery.action, delivery.payload
    if event == "issues" and action in {"opened", "edited"}:
        return _issue(payload, codex, edited=action == "edited")
    if event == "issue_comment":
        review = _review(payload, codex) if action in {"created", "edited"} else None
        if isinstance(review, ReviewTrigger):
            return review
        if action == "created":
            implementation = _implementation(payload, codex)
            if isinstance(implementation, Ignored) and review is not None:
                return review  # a refused review request says more than "not an implementation trigger"
            return implementation
        if review is not None:
            return review
        return Ignored(f"issue_comment.{action or 'unknown'} starts nothing")
    if event == "pull_request":
        if action not in PULL_ACTIVITY_ACTIONS:
            return Ignored(f"pull_request.{action or 'unknown'} starts nothing")
        return _pull_activity(payload, action or "", from_review=False)
    if event == "pull_request_review":
        if action not in PULL_REVIEW_ACTIONS:
            return Ignored(f"pull_request_review.{action or 'unknown'} starts nothing")
        return _pull_activity(payload, action or "", from_review=True)
    return Ignored(f"{event}{'.' + action if action else ''} starts nothing")


def _issue(payload: Mapping[str, Any], codex: CodexSettings, *, edited: bool) -> Decision:
    issue = _obj(payload, "issue")
    number = _int(issue, "number")
    if issue is None or number is None:
        return Ignored("the payload has no issue number")
    if _obj(issue, "pull_request") is not None:
        return Ignored("the issue is a pull request")
    author = normalize_login(_str(_obj(issue, "user"), "login"))
    repository = repository_name(payload, issue)
    if repository is None:
        return Ignored("the repository cannot be derived from the payload")
    if author not in codex.trigger_logins:
        if edited:
            return Ignored("issues.edited starts nothing")
        return Ignored(f"issue author {author or 'unknown'} is not a trigger login", refused_trigger=True)
    body = _str(issue, "body") or ""
    if PLAN_MARKER in body:
        return Ignored("the issue body already carries a plan marker")
    return PlanningTrigger(issue=_issue_ref(payload, issue, number, repository, codex), edited=edited)


def _implementation(payload: Mapping[str, Any], codex: CodexSettings) -> Decision:
    comment = _obj(payload, "comment")
    issue = _obj(payload, "issue")
    number = _int(issue, "number")
    if comment is None or issue is None or number is None:
        return Ignored("the payload has no comment or issue number")
    body = _str(comment, "body") or ""
    sender = normalize_login(_str(_obj(payload, "sender"), "login")) or normalize_login(
        _str(_obj(comment, "user"), "login")
    )
    has_marker = PLAN_MARKER in body and not is_placeholder(body)
    manual = body.strip() == codex.implementation_trigger
    trusted = sender in codex.trigger_logins
    if not ((trusted and (manual or has_marker)) or (has_marker and sender == codex.workflow_login)):
        if manual or has_marker:
            return Ignored(
                f"comment author {sender or 'unknown'} may not start implementation", refused_trigger=True
            )
        if PLAN_MARKER in body:
            return Ignored("the plan comment is still the planning placeholder")
        return Ignored("issue_comment.created starts nothing")
    repo_payload = _obj(issue, "repository")
    repository = repository_name(repo_payload or payload, issue)
    if repository is None:
        return Ignored("the repository cannot be derived from the payload")
    plan = None
    comment_id = _int(comment, "id")
    if has_marker and comment_id is not None:
        plan = PlanComment(id=comment_id, url=_str(comment, "html_url") or "", body=body)
    ref = _issue_ref(payload, issue, number, repository, codex)
    return ImplementationTrigger(issue=dataclasses.replace(ref, sender=sender or ""), plan=plan)


def _review(payload: Mapping[str, Any], codex: CodexSettings) -> Decision | None:
    """A review trigger, an Ignored refusal, or None when the comment does not ask for a review."""
    issue = _obj(payload, "issue")
    comment = _obj(payload, "comment")
    if issue is None or comment is None or _obj(issue, "pull_request") is None:
        return None
    body = _str(comment, "body") or ""
    if not review_pattern(codex.review_handle).search(body):
        return None
    association = (_str(comment, "author_association") or "").upper()
    sender = normalize_login(_str(_obj(payload, "sender"), "login")) or ""
    if association not in REVIEW_ASSOCIATIONS:
        return Ignored(
            f"review requested by {sender or 'unknown'} with association {association or 'NONE'}; "
            "only OWNER, MEMBER or COLLABORATOR may ask",
            refused_trigger=True,
        )
    repository = repository_name(payload, issue)
    number = _int(issue, "number")
    comment_id = _int(comment, "id")
    updated_at = _str(comment, "updated_at")
    if updated_at is not None and not _TIMESTAMP.fullmatch(updated_at):
        updated_at = None
    if repository is None or number is None or comment_id is None or not updated_at:
        return Ignored("the review request lacks a repository, pull request number, comment id or time")
    return ReviewTrigger(
        repository=repository,
        pull_number=number,
        comment_id=comment_id,
        comment_updated_at=updated_at,
        sender=sender,
    )


def _pull_activity(payload: Mapping[str, Any], action: str, *, from_review: bool) -> Decision:
    pull = _obj(payload, "pull_request")
    number = _int(pull, "number") or _int(payload, "number")
    repository = repository_name(payload, None)
    if pull is None or number is None or repository is None:
        return Ignored("the payload has no pull request number or repository")
    return PullActivity(repository=repository, pull_number=number, action=action, from_review=from_review)


# --- payload access (shapes are untrusted: every read checks its type) -----------------------------------


def repository_name(payload: Mapping[str, Any], issue: Mapping[str, Any] | None) -> str | None:
    """``repository.full_name``, else the last two segments of ``issue.repository_url``."""
    name = _str(_obj(payload, "repository"), "full_name")
    if name and is_repository(name):
        return name
    url = _str(issue, "repository_url") if issue is not None else None
    if url:
        parts = [p for p in url.rstrip("/").split("/") if p]
        if len(parts) >= 2 and is_repository(f"{parts[-2]}/{parts[-1]}"):
            return f"{parts[-2]}/{parts[-1]}"
    return None


def _issue_ref(
    payload: Mapping[str, Any], issue: Mapping[str, Any], number: int, repository: str, codex: CodexSettings
) -> IssueRef:
    base = _str(_obj(payload, "repository"), "default_branch") or codex.base_branch
    return IssueRef(
        repository=repository,
        number=number,
        title=_str(issue, "title") or f"Issue #{number}",
        body=_str(issue, "body") or "",
        url=_str(issue, "html_url") or f"https://github.com/{repository}/issues/{number}",
        base=base,
        sender=normalize_login(_str(_obj(payload, "sender"), "login"))
        or normalize_login(_str(_obj(issue, "user"), "login"))
        or "",
    )


def _obj(parent: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    value = parent.get(key) if parent is not None else None
    return value if isinstance(value, Mapping) else None


def _str(parent: Mapping[str, Any] | None, key: str) -> str | None:
    value = parent.get(key) if parent is not None else None
    return value if isinstance(value, str) else None


def _int(parent: Mapping[str, Any] | None, key: str) -> int | None:
    value = parent.get(key) if parent is not None else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= INT64_MAX:
        return None
    return value
