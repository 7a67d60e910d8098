"""POST /webhooks/github over HTTP, with GitHub served by a fake that checks every request against GitHub's
OpenAPI description: verification, idempotency, stage triggers, trust rules and PR activity."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from facteur.domain.events import verify_chain
from facteur.domain.ideas import IdeaSource, IdeaState, github_issue_ref
from facteur.domain.plans import plan_from_json, render_plan
from facteur.domain.untrusted import IDEA_SPEC_MARKER, PLAN_MARKER, PLANNING_PLACEHOLDER_COMMENT, READY_MARKER
from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb
from facteur.store.port import OutboxEntry
from tests.support.github_api import FakeGitHub
from tests.support.webhooks import (
    SECRET,
    comment_payload,
    hooked_app,
    issue_payload,
    signed,
    webhook_settings,
)

REPO = "acme/widgets"


@pytest.fixture
def github() -> FakeGitHub:
    fake = FakeGitHub()
    fake.add_repo(REPO)
    return fake


def header(entry: OutboxEntry, name: str) -> str | None:
    value = entry.message.header(name)
    return None if value is None else value.decode()


def by_topic(entries: list[OutboxEntry], topic: str) -> list[OutboxEntry]:
    return [e for e in entries if e.message.topic == topic]


async def test_rejects_unsigned_forged_malformed_and_oversized(sqlite_url: str) -> None:
    settings = webhook_settings(sqlite_url, FACTEUR_GITHUB__MAX_BODY_BYTES="2048")
    async with hooked_app(settings) as app:
        client = app.running.client
        body, headers = signed("issues", issue_payload(REPO, 1))
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        response = await client.post("/webhooks/github", content=body, headers=unsigned)
        assert response.status_code == 401
        assert "missing X-Hub-Signature-256" in response.json()["detail"]

        forged = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        response = await client.post("/webhooks/github", content=body, headers=forged)
        assert response.status_code == 401

        tampered = body.replace(b"faster", b"slower")
        response = await client.post("/webhooks/github", content=tampered, headers=headers)
        assert response.status_code == 401

        bad, bad_headers = signed("issues", b"{not json")
        response = await client.post("/webhooks/github", content=bad, headers=bad_headers)
        assert response.status_code == 400
        assert "Invalid JSON body" in response.json()["detail"]

        listed, listed_headers = signed("issues", b"[1, 2]")
        response = await client.post("/webhooks/github", content=listed, headers=listed_headers)
        assert response.status_code == 400

        big, big_headers = signed("issues", {"action": "opened", "pad": "x" * 4096})
        response = await client.post("/webhooks/github", content=big, headers=big_headers)
        assert response.status_code == 413

        response = await client.post("/webhooks/gitlab", content=b"{}")
        assert response.status_code == 400
        assert response.json()["detail"] == "Provider 'gitlab' not supported"

        assert await app.outbox() == []
        assert app.github.requests == []


async def test_without_a_secret_deliveries_are_refused(sqlite_url: str) -> None:
    settings = webhook_settings(sqlite_url, GITHUB_WEBHOOK_SECRET="")
    async with hooked_app(settings) as app:
        body, headers = signed("issues", issue_payload(REPO, 1))
        response = await app.running.client.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 503
        assert "github.webhook_secret" in response.json()["detail"]


async def test_planning_trigger_records_publishes_and_acknowledges(
    database_url: str, github: FakeGitHub
) -> None:
    issue = github.add_issue(REPO, body="Make it faster")
    async with hooked_app(webhook_settings(database_url), github) as app:
        delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        response = await app.post("issues", issue_payload(REPO, issue.number), delivery=delivery)
        assert response.status_code == 202
        answer = response.json()
        assert answer["status"] == "accepted"
        assert answer["codexStageTriggered"] == "planning"
        assert (answer["deliveryId"], answer["event"], answer["action"]) == (delivery, "issues", "opened")

        # GitHub: the placeholder plan comment and the +1 reaction, every request valid for the OpenAPI
        comments = github.repo(REPO).comments
        assert [c.body for c in comments] == [PLANNING_PLACEHOLDER_COMMENT]
        assert [r[0] for r in github.repo(REPO).reactions[issue.number]] == ["+1"]
        assert github.violations == []

        # bus: JSON task, protobuf task, raw body (in that order), all through the outbox
        entries = await app.outbox()
        assert [e.message.topic for e in entries] == [
            "github.codex.tasks",
            "github.issues.codex.tasks",
            "github.webhook.events",
            "codex.execution",  # the planning run, submitted (codex_dispatch.planning_enabled)
        ]
        as_json, as_proto, raw, _status = entries
        key = f"issue-{issue.number}-planning"
        assert as_json.message.key == as_proto.message.key == key.encode()
        assert header(as_json, "x-codex-task-stage") == "planning"
        assert header(as_json, "x-github-delivery") == delivery
        assert header(as_proto, "content-type") == "application/x-protobuf"
        assert header(as_proto, "x-protobuf-message") == "proompteng.froussard.v1.CodexTask"
        document = json.loads(as_json.message.value)
        assert "deliveryId" not in document
        head = f"codex/issue-{issue.number}-72d3162e"
        assert (document["stage"], document["head"], document["base"]) == ("planning", head, "main")
        assert document["issueNumber"] == issue.number
        assert PLAN_MARKER in document["prompt"]
        task = pb.CodexTask.FromString(as_proto.message.value)
        assert (task.stage, task.delivery_id, task.head) == (pb.CODEX_TASK_STAGE_PLANNING, delivery, head)
        assert raw.message.key == delivery.encode()
        assert raw.message.value == json.dumps(issue_payload(REPO, issue.number)).encode()

        # store: idea, task, run and events through the same path as POST /codex/tasks
        run = await app.running.runtime.store.get_run(uuid.UUID(answer["runId"]))
        assert (run.stage, run.delivery_id) == ("planning", delivery)
        events = await app.running.runtime.store.list_events()
        assert [e.kind for e in events] == ["idea.registered", "codex_task.accepted", "run.submitted"]
        assert events[1].actor == "intake:github"

        # a redelivery: answered from the inbox, nothing done twice
        again = await app.post("issues", issue_payload(REPO, issue.number), delivery=delivery)
        assert again.status_code == 202
        assert again.json()["status"] == "duplicate"
        assert again.json()["runId"] == answer["runId"]
        assert again.json()["codexStageTriggered"] == "planning"
        assert len(github.repo(REPO).comments) == 1
        assert len(await app.outbox()) == 4
        # and the same task arriving again through the bus is a duplicate of this delivery
        replay = await app.running.client.post(
            "/codex/tasks", content=as_proto.message.value, headers={"Content-Type": "application/x-protobuf"}
        )
        assert replay.status_code == 202 and replay.json()["duplicate"] is True
        assert replay.json()["runId"] == answer["runId"]


async def test_planning_is_skipped_when_a_plan_exists_and_placeholder_reused(
    sqlite_url: str, github: FakeGitHub
) -> None:
    planned = github.add_issue(REPO)
    github.add_comment(REPO, planned.number, f"{PLAN_MARKER}\n### Objective\nShip it", author="facteur-bot")
    waiting = github.add_issue(REPO)
    github.add_comment(REPO, waiting.number, PLANNING_PLACEHOLDER_COMMENT, author="facteur-bot")
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        skipped = await app.post("issues", issue_payload(REPO, planned.number))
        assert skipped.json()["status"] == "ignored"
        assert skipped.json()["reason"] == "a plan already exists for this issue"
        assert skipped.json()["codexStageTriggered"] is None

        reused = await app.post("issues", issue_payload(REPO, waiting.number))
        assert reused.json()["codexStageTriggered"] == "planning"
        assert len(github.repo(REPO).comments) == 2  # no second placeholder
        marked = await app.post("issues", issue_payload(REPO, waiting.number, body=f"x {PLAN_MARKER}"))
        assert marked.json()["reason"] == "the issue body already carries a plan marker"
        assert await app.topics() == [
            "github.webhook.events",
            "github.codex.tasks",
            "github.issues.codex.tasks",
            "github.webhook.events",
            "codex.execution",
            "github.webhook.events",
        ]
        assert github.violations == []


async def test_untrusted_and_bot_triggers_are_recorded_and_ignored(
    sqlite_url: str, github: FakeGitHub
) -> None:
    issue = github.add_issue(REPO)
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        stranger = await app.post("issues", issue_payload(REPO, issue.number, author="mallory"))
        assert stranger.json()["status"] == "ignored"
        assert "mallory is not a trigger login" in stranger.json()["reason"]

        execute = await app.post(
            "issue_comment", comment_payload(REPO, issue.number, "execute plan", author="mallory")
        )
        assert "may not start implementation" in execute.json()["reason"]

        bot = await app.post(
            "issue_comment",
            comment_payload(REPO, issue.number, "execute plan", author="renovate[bot]", author_type="Bot"),
        )
        assert "is a bot other than codex.workflow_login" in bot.json()["reason"]

        review = await app.post(
            "issue_comment",
            comment_payload(REPO, issue.number, "@tuslagch review", association="CONTRIBUTOR", pull=True),
        )
        assert "only OWNER, MEMBER or COLLABORATOR" in review.json()["reason"]

        chatter = await app.post("issue_comment", comment_payload(REPO, issue.number, "thanks!"))
        assert chatter.json()["reason"] == "issue_comment.created starts nothing"

        # refused triggers are audit events; plain chatter is only recorded in the inbox
        events = await app.running.runtime.store.list_events()
        assert [e.kind for e in events] == ["trigger.ignored"] * 3
        assert [e.payload["sender"] for e in events] == ["mallory", "mallory", "octocat"]
        assert verify_chain(events) is None
        assert await app.topics() == ["github.webhook.events"] * 5
        assert github.requests == []  # nothing untrusted reached GitHub


async def test_implementation_from_execute_plan_and_from_the_workflow_plan_comment(
    database_url: str, github: FakeGitHub
) -> None:
    issue = github.add_issue(REPO)
    plan = github.add_comment(
        REPO, issue.number, f"{PLAN_MARKER}\n### Objective\nDo it", author="github-actions[bot]"
    )
    async with hooked_app(webhook_settings(database_url), github) as app:
        response = await app.post("issue_comment", comment_payload(REPO, issue.number, "  execute plan \n"))
        assert response.json()["codexStageTriggered"] == "implementation"
        entries = by_topic(await app.outbox(), "github.codex.tasks")
        document = json.loads(entries[0].message.value)
        assert entries[0].message.key == f"issue-{issue.number}-implementation".encode()
        assert document["planCommentId"] == plan.id
        assert document["planCommentBody"] == plan.body
        assert "Do it" in document["prompt"]

        workflow = comment_payload(
            REPO,
            issue.number,
            f"{PLAN_MARKER}\n### Objective\nThe new plan",
            author="github-actions[bot]",
            author_type="Bot",
            comment_id=4321,
        )
        response = await app.post("issue_comment", workflow)
        assert response.json()["codexStageTriggered"] == "implementation"
        document = json.loads(by_topic(await app.outbox(), "github.codex.tasks")[1].message.value)
        assert document["planCommentId"] == 4321
        assert "The new plan" in document["prompt"]
        assert document["head"] != json.loads(entries[0].message.value)["head"]

        placeholder = comment_payload(REPO, issue.number, PLANNING_PLACEHOLDER_COMMENT, comment_id=5)
        response = await app.post("issue_comment", placeholder)
        assert response.json()["reason"] == "the plan comment is still the planning placeholder"
        assert github.violations == []


def review_setup(github: FakeGitHub) -> int:
    pull = github.add_pull(REPO, head="codex/issue-17-abcdef12", mergeable_state="dirty", draft=False)
    github.add_thread(REPO, pull.number, body="Please   rename\nthis")
    github.add_thread(REPO, pull.number, body="done", resolved=True)
    github.add_check_run(REPO, pull.head_sha, "tests", conclusion="failure", summary="2 failed")
    github.add_check_run(REPO, pull.head_sha, "lint", conclusion="success")
    github.add_status(REPO, pull.head_sha, "ci/deploy", "error", description="boom")
    return pull.number


async def test_review_request_folds_threads_checks_and_merge_state(
    database_url: str, github: FakeGitHub
) -> None:
    number = review_setup(github)
    async with hooked_app(webhook_settings(database_url), github) as app:
        ask = comment_payload(
            REPO, number, "Could you @TUSLAGCH review, please", pull=True, association="member"
        )
        response = await app.post("issue_comment", ask)
        answer = response.json()
        assert answer["codexStageTriggered"] == "reviewRequested", answer
        entries = await app.outbox()
        as_json, as_proto = (
            by_topic(entries, "github.codex.tasks")[0],
            by_topic(entries, "github.issues.codex.tasks")[0],
        )
        fingerprint = header(as_json, "x-codex-review-fingerprint")
        assert fingerprint is not None and len(fingerprint) == 32
        assert as_json.message.key == f"pull-{number}-review-{fingerprint}".encode()
        assert header(as_proto, "x-codex-review-head-sha") == github.repo(REPO).pulls[number].head_sha
        document = json.loads(as_json.message.value)
        assert document["issueNumber"] == 17
        assert document["stage"] == "review"
        context = document["reviewContext"]
        assert context["reviewThreads"][0]["summary"] == "Please rename this"
        assert {c["name"] for c in context["failingChecks"]} == {"tests", "ci/deploy"}
        assert "GitHub reports mergeable_state=dirty." in context["additionalNotes"]
        task = pb.CodexTask.FromString(as_proto.message.value)
        assert task.stage == pb.CODEX_TASK_STAGE_REVIEW
        assert len(task.review_context.review_threads) == 1

        # the same comment through another delivery is handled once; an edit asks again
        again = await app.post("issue_comment", ask)
        assert again.json()["status"] == "ignored"
        assert again.json()["reason"] == "review already requested for comment 900"
        edited = comment_payload(
            REPO, number, "@tuslagch review", pull=True, action="edited", updated_at="2026-11-21T13:00:00Z"
        )
        response = await app.post("issue_comment", edited)
        assert response.json()["codexStageTriggered"] == "reviewRequested"
        assert len(by_topic(await app.outbox(), "github.codex.tasks")) == 2
        assert github.violations == []


async def test_review_of_a_closed_or_unknown_pull_request_is_ignored(
    sqlite_url: str, github: FakeGitHub
) -> None:
    number = review_setup(github)
    github.repo(REPO).issues[number].state = "closed"
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        closed = await app.post("issue_comment", comment_payload(REPO, number, "@tuslagch review", pull=True))
        assert closed.json()["reason"] == f"pull request #{number} is closed"
        unknown = await app.post("issue_comment", comment_payload(REPO, 999, "@tuslagch review", pull=True))
        assert unknown.json()["reason"] == f"pull request {REPO}#999 not found"


async def test_forge_failure_answers_502_and_records_nothing(sqlite_url: str, github: FakeGitHub) -> None:
    number = review_setup(github)
    settings = webhook_settings(sqlite_url, FACTEUR_GITHUB__MAX_ATTEMPTS="1")
    async with hooked_app(settings, github) as app:
        github.fail(502, times=1)
        ask = comment_payload(REPO, number, "@tuslagch review", pull=True)
        failed = await app.post("issue_comment", ask, delivery="flaky-1")
        assert failed.status_code == 502
        assert failed.json()["error"] == "forge unavailable"
        assert await app.outbox() == []
        retried = await app.post("issue_comment", ask, delivery="flaky-1")
        assert retried.json()["codexStageTriggered"] == "reviewRequested"


async def test_pull_request_activity_undrafts_then_says_ready(sqlite_url: str, github: FakeGitHub) -> None:
    pull = github.add_pull(REPO, head="codex/issue-3-aaaaaaaa", draft=True, mergeable_state="clean")
    github.add_check_run(REPO, pull.head_sha, "tests", conclusion="success")
    payload: dict[str, Any] = {
        "action": "opened",
        "number": pull.number,
        "pull_request": {"number": pull.number},
        "repository": {"full_name": REPO},
        "sender": {"login": "octocat"},
    }
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        response = await app.post("pull_request", payload)
        assert response.json()["status"] == "accepted"
        assert response.json()["codexStageTriggered"] is None
        assert response.json()["actions"] == ["marked_ready", "handoff_comment"]
        assert github.repo(REPO).pulls[pull.number].draft is False
        assert [c.body for c in github.repo(REPO).comments] == ["@codex review"]

        # approved (+1) and clean: one ready-to-merge comment, never twice, never a review run
        repo = github.repo(REPO)
        repo.reactions.setdefault(pull.number, []).append(("+1", "octocat"))
        sync = {**payload, "action": "synchronize"}
        response = await app.post("pull_request", sync)
        assert response.json()["actions"] == ["ready_comment"]
        assert repo.comments[-1].body.startswith(f"{READY_MARKER}\n:shipit:")
        response = await app.post("pull_request_review", {**payload, "action": "submitted"})
        assert response.json()["actions"] == ["none: nothing to do"]
        assert len(repo.comments) == 2
        assert "github.codex.tasks" not in await app.topics()
        assert github.violations == []


SPEC_OK = f"""{IDEA_SPEC_MARKER.replace("-spec", "")}
### Goal
Cut the p99 latency of the widget API in half.

### Constraints
No new services; keep the public API.

### Success metrics
- p99 latency below 120 ms
- error rate unchanged

### Priority
P1

### Risk labels
database-migration
"""


async def test_idea_spec_issue_comment_once_then_plans_when_fixed(
    database_url: str, github: FakeGitHub
) -> None:
    broken = SPEC_OK.replace("P1", "urgent!").replace(
        "- p99 latency below 120 ms\n- error rate unchanged\n", ""
    )
    issue = github.add_issue(REPO, body=broken)
    async with hooked_app(webhook_settings(database_url), github) as app:
        response = await app.post("issues", issue_payload(REPO, issue.number, body=broken))
        assert response.json()["status"] == "ignored"
        assert "idea spec is invalid" in response.json()["reason"]
        comments = github.repo(REPO).comments
        assert len(comments) == 1 and comments[0].body.startswith(IDEA_SPEC_MARKER)
        first = comments[0].body
        assert "Priority" in first and "Success metrics" in first

        still = broken.replace("urgent!", "P2")
        response = await app.post("issues", issue_payload(REPO, issue.number, body=still, action="edited"))
        assert response.json()["status"] == "ignored"
        assert len(comments) == 1 and comments[0].body != first  # updated, not posted again

        response = await app.post("issues", issue_payload(REPO, issue.number, body=SPEC_OK, action="edited"))
        answer = response.json()
        assert answer["codexStageTriggered"] == "planning"
        assert "valid now" in comments[0].body
        idea = await app.running.runtime.store.get_idea(uuid.UUID(answer["ideaId"]))
        assert idea.priority == 1
        intent = by_topic(await app.outbox(), "codex.intent")
        assert len(intent) == 1
        document = json.loads(intent[0].message.value)
        assert document["spec"]["risk_labels"] == ["database-migration"]
        assert document["spec"]["success_metrics"] == ["p99 latency below 120 ms", "error rate unchanged"]

        # editing a valid spec again starts nothing
        response = await app.post("issues", issue_payload(REPO, issue.number, body=SPEC_OK, action="edited"))
        assert response.json()["status"] == "ignored"
        events = await app.running.runtime.store.list_events()
        assert [e.kind for e in events].count("idea_spec.rejected") == 2
        assert github.violations == []


async def test_concurrent_redeliveries_trigger_once(sqlite_url: str, github: FakeGitHub) -> None:
    import asyncio

    issue = github.add_issue(REPO)
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        responses = await asyncio.gather(
            *(
                app.post("issues", issue_payload(REPO, issue.number), delivery="same-delivery")
                for _ in range(6)
            )
        )
        statuses = sorted(r.json()["status"] for r in responses)
        assert statuses.count("accepted") == 1
        assert len({r.json()["runId"] for r in responses}) == 1
        assert len(by_topic(await app.outbox(), "github.codex.tasks")) == 1
        assert [c.body for c in github.repo(REPO).comments] == [PLANNING_PLACEHOLDER_COMMENT]
        assert len(github.repo(REPO).reactions[issue.number]) == 1


def test_secret_is_the_signing_key() -> None:
    body, headers = signed("ping", {"zen": "Keep it logically awesome."})
    from facteur.intake.github_delivery import signature_valid

    assert signature_valid(SECRET, body, headers["X-Hub-Signature-256"])
    assert not signature_valid("other", body, headers["X-Hub-Signature-256"])


async def test_signed_but_hostile_payloads_never_answer_500(sqlite_url: str, github: FakeGitHub) -> None:
    issue = github.add_issue(REPO)
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        huge = issue_payload(REPO, issue.number)
        huge["issue"]["number"] = 2**64
        response = await app.post("issues", huge)
        assert response.status_code == 202
        assert response.json()["reason"] == "the payload has no issue number"

        plan = comment_payload(REPO, issue.number, f"{PLAN_MARKER}\n### Objective\nx", comment_id=2**63)
        response = await app.post("issue_comment", plan)
        assert response.status_code == 202

        lone = json.dumps(issue_payload(REPO, issue.number)).replace("Make it faster", "\\ud800").encode()
        response = await app.post("issues", lone)
        assert response.status_code == 400
        assert "surrogate" in response.json()["detail"]
        paired = json.dumps(issue_payload(REPO, issue.number, body="ship it \U0001f680")).encode()
        assert b"\\ud83d" in paired
        response = await app.post("issues", paired)
        assert response.json()["codexStageTriggered"] == "planning"

        foreign = issue_payload("ówner/widgets", issue.number)
        foreign["issue"]["repository_url"] = "https://api.github.com/repos/ówner/widgets"
        response = await app.post("issues", foreign)
        assert response.json()["reason"] == "the repository cannot be derived from the payload"

        odd_time = comment_payload(REPO, issue.number, "@tuslagch review", pull=True, updated_at="x" * 400)
        response = await app.post("issue_comment", odd_time)
        assert response.status_code == 202
        assert response.json()["status"] == "ignored"
        assert github.violations == []


async def test_a_task_recorded_first_through_codex_tasks_is_not_recorded_twice(
    sqlite_url: str, github: FakeGitHub
) -> None:
    issue = github.add_issue(REPO)
    async with hooked_app(webhook_settings(sqlite_url), github) as app:
        task = pb.CodexTask(
            stage=pb.CODEX_TASK_STAGE_PLANNING,
            repository=REPO,
            issue_number=issue.number,
            delivery_id="seen-before",
            prompt="p",
        )
        first = await app.running.client.post(
            "/codex/tasks",
            content=task.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert first.status_code == 202
        response = await app.post("issues", issue_payload(REPO, issue.number), delivery="seen-before")
        assert response.status_code == 202
        assert response.json()["status"] == "ignored"
        assert "recorded before" in response.json()["reason"]
        assert github.requests == []  # no placeholder, no reaction


async def test_a_plan_in_the_plan_format_is_run_by_the_orchestrator_once_execute_plan_approves_it(
    sqlite_url: str, github: FakeGitHub
) -> None:
    issue = github.add_issue(REPO)
    settings = webhook_settings(
        sqlite_url, FACTEUR_APPROVALS__REQUIRED="true", FACTEUR_SCHEDULER__ENABLED="false"
    )
    async with hooked_app(settings, github) as app:
        store = app.running.runtime.store
        opened = await app.post("issues", issue_payload(REPO, issue.number))
        assert opened.json()["codexStageTriggered"] == "planning"
        idea = await store.find_idea(IdeaSource.GITHUB_ISSUE, github_issue_ref(REPO, issue.number))
        assert idea is not None and idea.state is IdeaState.REGISTERED

        document = {
            "tasks": [
                {"key": "api", "title": "API", "acceptance_criteria": ["served"]},
                {"key": "ui", "title": "UI", "depends_on": ["api"], "acceptance_criteria": ["shown"]},
            ]
        }
        plan_comment = comment_payload(
            REPO,
            issue.number,
            render_plan(plan_from_json(document)),
            author="github-actions[bot]",
            author_type="Bot",
            comment_id=777,
        )
        response = await app.post("issue_comment", plan_comment)
        body = response.json()
        assert (body["status"], body["codexStageTriggered"], body["planComment"]) == ("accepted", None, 777)
        waiting = await store.idea_detail(idea.id)
        assert waiting.idea.state is IdeaState.AWAITING_APPROVAL and waiting.plans[0].source == "comment"

        stranger = await app.post(
            "issue_comment", comment_payload(REPO, issue.number, "execute plan", author="mallory")
        )
        assert stranger.json()["status"] == "ignored"
        approve = await app.post("issue_comment", comment_payload(REPO, issue.number, "execute plan"))
        assert (approve.json()["approvedBy"], approve.json()["codexStageTriggered"]) == ("octocat", None)
        approved = await store.idea_detail(idea.id)
        assert approved.idea.state is IdeaState.AWAITING_DEPENDENCIES and approved.idea.plan_version == 1
        assert [(v.task.key, v.task.state.value) for v in approved.tasks][-2:] == [
            ("api", "ready"),
            ("ui", "pending"),
        ]
        assert [(a.decision, a.decided_by) for a in approved.approvals] == [("approved", "octocat")]
        # no Froussard-style implementation run was started: the orchestrator runs the plan's tasks
        assert [
            json.loads(e.message.value)["stage"] for e in by_topic(await app.outbox(), "github.codex.tasks")
        ] == ["planning"]
        assert github.violations == []
