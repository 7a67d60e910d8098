"""GitHub's JSON to the Forge port's records, leniently: missing optional fields are tolerated, a missing
required field is a ForgeError naming it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from facteur.clock import parse_timestamp
from facteur.errors import ForgeError
from facteur.forge.port import (
    Branch,
    CheckRun,
    Comment,
    CommitStatus,
    Issue,
    MergeResult,
    PullRequest,
    ReviewThread,
)

T = TypeVar("T")
Json = dict[str, Any]


def as_object(value: object, what: str) -> Json:
    if not isinstance(value, dict):
        raise ForgeError(f"GitHub's answer for {what} is not a JSON object")
    return value


def as_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ForgeError(f"GitHub's answer for {what} is not a JSON list")
    return value


def required(data: Json, key: str, kind: type[T], what: str) -> T:
    value = data.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise ForgeError(f"GitHub's {what} lacks {key} (expected {kind.__name__})")
    return value


def _text(data: Json | None, key: str) -> str:
    value = (data or {}).get(key)
    return value if isinstance(value, str) else ""


def _optional_text(data: Json | None, key: str) -> str | None:
    value = (data or {}).get(key)
    return value if isinstance(value, str) else None


def _object(data: Json | None, key: str) -> Json | None:
    value = (data or {}).get(key)
    return value if isinstance(value, dict) else None


def _login(data: Json, key: str = "user") -> str:
    return _text(_object(data, key), "login")


def _time(data: Json, key: str) -> datetime | None:
    return parse_timestamp(data.get(key))


def issue(data: Json) -> Issue:
    labels: list[str] = []
    for label in data.get("labels") or ():
        if isinstance(label, str):
            labels.append(label)
        elif isinstance(label, dict) and isinstance(label.get("name"), str):
            labels.append(label["name"])
    return Issue(
        number=required(data, "number", int, "issue"),
        title=_text(data, "title"),
        body=_text(data, "body"),
        state=_text(data, "state") or "open",
        author=_login(data),
        url=_text(data, "html_url"),
        labels=tuple(labels),
        is_pull_request=isinstance(data.get("pull_request"), dict),
    )


def comment(data: Json) -> Comment:
    return Comment(
        id=required(data, "id", int, "comment"),
        body=_text(data, "body"),
        author=_login(data),
        url=_text(data, "html_url"),
        created_at=_time(data, "created_at"),
        updated_at=_time(data, "updated_at"),
    )


def pull_request(data: Json) -> PullRequest:
    head = _object(data, "head")
    base = _object(data, "base")
    if head is None or base is None:
        raise ForgeError(f"GitHub's pull request lacks {'head' if head is None else 'base'}")
    return PullRequest(
        number=required(data, "number", int, "pull request"),
        title=_text(data, "title"),
        body=_text(data, "body"),
        state=_text(data, "state") or "open",
        draft=data.get("draft") is True,
        merged=data.get("merged") is True or bool(data.get("merged_at")),
        head_ref=required(head, "ref", str, "pull request head"),
        head_sha=required(head, "sha", str, "pull request head"),
        base_ref=required(base, "ref", str, "pull request base"),
        url=_text(data, "html_url"),
        node_id=_text(data, "node_id"),
        mergeable_state=_optional_text(data, "mergeable_state"),
        author=_login(data),
    )


def merge_result(data: Json) -> MergeResult:
    return MergeResult(
        merged=data.get("merged") is True, sha=_optional_text(data, "sha"), message=_text(data, "message")
    )


def review_thread(data: Json) -> ReviewThread:
    last: Json | None = None
    for node in (_object(data, "comments") or {}).get("nodes") or ():
        if isinstance(node, dict):
            last = node
    return ReviewThread(
        is_resolved=data.get("isResolved") is True,
        path=_optional_text(data, "path"),
        body=_text(last, "bodyText"),
        url=_optional_text(last, "url"),
        author=_optional_text(_object(last, "author"), "login"),
    )


def check_run(data: Json) -> CheckRun:
    output = _object(data, "output")
    return CheckRun(
        name=required(data, "name", str, "check run"),
        status=_text(data, "status") or "queued",
        conclusion=_optional_text(data, "conclusion"),
        url=_optional_text(data, "details_url") or _optional_text(data, "html_url"),
        summary=_optional_text(output, "summary"),
        title=_optional_text(output, "title"),
    )


def commit_status(data: Json) -> CommitStatus:
    return CommitStatus(
        context=required(data, "context", str, "commit status"),
        state=required(data, "state", str, "commit status"),
        description=_optional_text(data, "description"),
        url=_optional_text(data, "target_url"),
    )


def branch(data: Json) -> Branch:
    commit = _object(data, "commit")
    if commit is None:
        raise ForgeError("GitHub's branch lacks commit")
    return Branch(required(data, "name", str, "branch"), required(commit, "sha", str, "branch commit"))
