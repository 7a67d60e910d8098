"""Every example delivery GitHub documents (all events and actions), signed and posted to the app: none may
answer 5xx, and each is triggered, accepted or ignored as the routing rules say. GitHub's API is the fake
that answers from the OpenAPI description's examples and checks every request against it."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from facteur.domain.untrusted import PLAN_MARKER
from tests.support.github_api import FakeGitHub
from tests.support.services import shared_path
from tests.support.webhooks import hooked_app, webhook_settings

TRIGGER_LOGINS = {"codertocat", "octocat"}
PULL_ACTIONS = {
    "opened",
    "ready_for_review",
    "synchronize",
    "reopened",
    "edited",
    "converted_to_draft",
    "review_requested",
    "review_request_removed",
}


def examples() -> list[tuple[str, dict[str, Any]]]:
    document = json.loads(shared_path("fixtures", "github", "webhook-examples.json").read_text())
    return [(entry["name"], example) for entry in document for example in entry.get("examples", [])]


def expected_stage(event: str, payload: dict[str, Any]) -> str | None:
    """An independent statement of the rules, for payloads as GitHub documents them (no review requests,
    no idea specs among the examples)."""
    action = payload.get("action")
    sender = payload.get("sender") or {}
    login = str(sender.get("login", "")).lower()
    if event in {"issues", "issue_comment"} and (sender.get("type") == "Bot" or login.endswith("[bot]")):
        return None
    if event == "issues" and action == "opened":
        issue = payload["issue"]
        author = str(issue["user"]["login"]).lower()
        if author in TRIGGER_LOGINS and PLAN_MARKER not in (issue.get("body") or ""):
            return "planning"
    if event == "issue_comment" and action == "created":
        body = payload["comment"]["body"] or ""
        if login in TRIGGER_LOGINS and (body.strip() == "execute plan" or PLAN_MARKER in body):
            return "implementation"
    return None


def expected_status(event: str, payload: dict[str, Any]) -> str:
    action = payload.get("action")
    if expected_stage(event, payload) is not None:
        return "accepted"
    if event == "pull_request" and action in PULL_ACTIONS:
        return "accepted"
    if event == "pull_request_review" and action in {"submitted", "edited", "dismissed"}:
        return "accepted"
    return "ignored"


def seed(github: FakeGitHub, payload: dict[str, Any]) -> None:
    """Make the repository, issue and pull request of a payload exist on the fake, at their numbers."""
    repository = payload.get("repository") or {}
    name = repository.get("full_name")
    if not isinstance(name, str):
        return
    repo = github.repo(name)
    pull = payload.get("pull_request")
    issue = payload.get("issue")
    number = (pull or {}).get("number") or (issue or {}).get("number")
    if not isinstance(number, int):
        return
    while len(repo.issues) < number - 1:
        github.add_issue(name)
    if number in repo.issues:
        return
    if pull is not None or (issue or {}).get("pull_request"):
        head = ((pull or {}).get("head") or {}).get("ref") or f"feature-{number}"
        github.add_pull(name, head=head)
    else:
        github.add_issue(name)


async def test_every_documented_delivery_is_answered_by_the_rules(sqlite_url: str) -> None:
    github = FakeGitHub()
    cases = examples()
    assert len(cases) > 300
    for _event, payload in cases:
        seed(github, payload)
    settings = webhook_settings(sqlite_url, CODEX_TRIGGER_LOGINS=",".join(sorted(TRIGGER_LOGINS)))
    seen: Counter[tuple[str, str]] = Counter()
    async with hooked_app(settings, github) as app:
        for n, (event, payload) in enumerate(cases):
            delivery = str(uuid.UUID(int=n + 1))
            response = await app.post(event, payload, delivery=delivery)
            where = f"example {n} ({event}.{payload.get('action')})"
            assert response.status_code == 202, f"{where}: {response.status_code} {response.text}"
            answer = response.json()
            assert answer["status"] == expected_status(event, payload), f"{where}: {answer}"
            assert answer["codexStageTriggered"] == expected_stage(event, payload), f"{where}: {answer}"
            assert (answer["deliveryId"], answer["event"]) == (delivery, event)
            seen[(answer["status"], answer["codexStageTriggered"] or "-")] += 1

        # every delivery is recorded, and each one's raw body went to the outbox exactly once
        store = app.running.runtime.store
        for n in range(len(cases)):
            assert await store.find_delivery("github", str(uuid.UUID(int=n + 1))) is not None
        raw = [e for e in await app.outbox() if e.message.topic == "github.webhook.events"]
        assert len(raw) == len(cases)

        # a redelivery of any of them is a duplicate
        event, payload = cases[0]
        again = await app.post(event, payload, delivery=str(uuid.UUID(int=1)))
        assert again.json()["status"] == "duplicate"

    assert github.violations == []
    # the rules were exercised, not only the "ignored" path
    assert seen[("accepted", "planning")] > 0
    assert seen[("accepted", "-")] > 0
    assert seen[("ignored", "-")] > 200
