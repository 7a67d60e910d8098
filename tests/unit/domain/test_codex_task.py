"""The CodexTask wire format and its JSON forms."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from facteur.domain import codex_task
from facteur.domain.stages import Stage
from facteur.errors import InvalidInput, InvalidPayload
from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb
from tests.support.services import shared_path


def canary_bytes() -> bytes:
    return base64.b64decode(shared_path("fixtures", "codex-task", "dry-run-0001.b64").read_text())


def test_canary_decodes_to_expected_json() -> None:
    expected: dict[str, Any] = json.loads(
        shared_path("fixtures", "codex-task", "dry-run-0001.expected.json").read_text()
    )
    task = codex_task.decode_binary(canary_bytes())

    decoded = {field.name: value for field, value in task.ListFields()}
    decoded["stage"] = codex_task.stage_name(task.stage)
    assert decoded == expected
    assert len(canary_bytes()) == 170
    # re-encoding gives the seeds' bytes back
    assert task.SerializeToString() == canary_bytes()


def test_field_numbers_match_the_seeds() -> None:
    numbers = {f.name: f.number for f in pb.CodexTask.DESCRIPTOR.fields}
    assert numbers == {
        "stage": 1,
        "prompt": 2,
        "repository": 3,
        "base": 4,
        "head": 5,
        "issue_number": 6,
        "issue_url": 7,
        "issue_title": 8,
        "issue_body": 9,
        "sender": 10,
        "issued_at": 11,
        "plan_comment_id": 12,
        "plan_comment_url": 13,
        "plan_comment_body": 14,
        "delivery_id": 15,
        "review_context": 16,
    }
    assert pb.CodexTask.DESCRIPTOR.full_name == "proompteng.froussard.v1.CodexTask"
    assert dict(pb.CodexTaskStage.items()) == {
        "CODEX_TASK_STAGE_UNSPECIFIED": 0,
        "CODEX_TASK_STAGE_PLANNING": 1,
        "CODEX_TASK_STAGE_IMPLEMENTATION": 2,
        "CODEX_TASK_STAGE_REVIEW": 3,
    }
    context = {f.name: f.number for f in pb.CodexReviewContext.DESCRIPTOR.fields}
    assert context == {"summary": 1, "review_threads": 2, "failing_checks": 3, "additional_notes": 4}
    thread = {f.name: f.number for f in pb.CodexReviewThread.DESCRIPTOR.fields}
    assert thread == {"summary": 1, "url": 2, "author": 3}
    check = {f.name: f.number for f in pb.CodexFailingCheck.DESCRIPTOR.fields}
    assert check == {"name": 1, "conclusion": 2, "url": 3, "details": 4}


def test_proto_json_renders_int64_as_string_and_enum_names() -> None:
    task = codex_task.decode_binary(canary_bytes())
    document = codex_task.to_proto_json(task)
    assert document["issueNumber"] == "999"
    assert document["stage"] == "CODEX_TASK_STAGE_PLANNING"
    assert document["deliveryId"] == "dry-run-0001"
    assert codex_task.decode_json(json.dumps(document).encode()) == task


@pytest.mark.parametrize("issue_number", [42, "42"])
@pytest.mark.parametrize("stage", ["CODEX_TASK_STAGE_REVIEW", "review", "REVIEW", 3])
def test_json_accepts_number_or_string_issue_and_any_stage_spelling(
    issue_number: object, stage: object
) -> None:
    body = json.dumps({"stage": stage, "repository": "acme/widgets", "issueNumber": issue_number})
    task = codex_task.decode_json(body.encode())
    assert task.issue_number == 42
    assert task.stage == pb.CODEX_TASK_STAGE_REVIEW


def test_json_accepts_snake_case_names() -> None:
    task = codex_task.decode_json(b'{"issue_number": 5, "delivery_id": "d", "repository": "a/b"}')
    assert (task.issue_number, task.delivery_id) == (5, "d")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "empty payload"),
        (b"   ", "empty payload"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"stage": "planning", "bogus": 1}', "bogus"),
        (b'{"issueNumber": "forty-two"}', "issueNumber"),
        (b'{"stage": "deploying"}', "CODEX_TASK_STAGE_DEPLOYING"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_json_is_rejected_with_the_problem_named(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        codex_task.decode_json(body)


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"])
def test_corrupt_binary_is_rejected(body: bytes) -> None:
    with pytest.raises(InvalidPayload, match="CodexTask"):
        codex_task.decode_binary(body)


def test_empty_binary_is_rejected() -> None:
    with pytest.raises(InvalidPayload, match="empty payload"):
        codex_task.decode_binary(b"")


def _task(**fields: Any) -> pb.CodexTask:
    values: dict[str, Any] = {
        "stage": pb.CODEX_TASK_STAGE_PLANNING,
        "repository": "acme/widgets",
        "issue_number": 7,
        "delivery_id": "d-1",
    }
    values.update(fields)
    return pb.CodexTask(**values)


def test_accept_returns_what_ingest_needs() -> None:
    accepted = codex_task.accept(_task(delivery_id="  d-1 "))
    assert (accepted.stage, accepted.repository, accepted.issue_number, accepted.delivery_id) == (
        Stage.PLANNING,
        "acme/widgets",
        7,
        "d-1",
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"stage": pb.CODEX_TASK_STAGE_UNSPECIFIED}, "unknown stage CODEX_TASK_STAGE_UNSPECIFIED"),
        ({"stage": 9}, "unknown stage 9"),
        ({"delivery_id": ""}, "missing delivery_id"),
        ({"delivery_id": "   "}, "missing delivery_id"),
        ({"delivery_id": "x" * 201}, "longer than 200"),
        ({"repository": ""}, "owner/name"),
        ({"repository": "no-slash"}, "owner/name"),
        ({"repository": "a/b; rm -rf /"}, "owner/name"),
        ({"issue_number": 0}, "positive"),
        ({"issue_number": -3}, "positive"),
    ],
)
def test_accept_names_what_is_wrong(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        codex_task.accept(_task(**fields))


def test_task_message_matches_the_reference_shape() -> None:
    issued = Timestamp()
    issued.FromDatetime(datetime(2025, 10, 31, 12, 0, 0, tzinfo=UTC))
    task = _task(
        prompt="Plan it",
        base="main",
        head="codex/issue-7-abc",
        issue_url="https://github.com/acme/widgets/issues/7",
        issue_title="Faster widgets",
        issue_body="Body",
        sender="octocat",
        issued_at=issued,
        plan_comment_id=12345,
        plan_comment_body="<!-- codex:plan -->",
        review_context=pb.CodexReviewContext(
            summary="2 threads",
            review_threads=[pb.CodexReviewThread(summary="rename x", author="alice")],
            failing_checks=[pb.CodexFailingCheck(name="ci/test", conclusion="failure")],
            additional_notes=["mergeable_state=blocked"],
        ),
    )
    message = codex_task.to_task_message(task)
    assert message == {
        "stage": "planning",
        "prompt": "Plan it",
        "repository": "acme/widgets",
        "base": "main",
        "head": "codex/issue-7-abc",
        "issueNumber": 7,
        "issueUrl": "https://github.com/acme/widgets/issues/7",
        "issueTitle": "Faster widgets",
        "issueBody": "Body",
        "sender": "octocat",
        "issuedAt": "2025-10-31T12:00:00Z",
        "planCommentId": 12345,
        "planCommentBody": "<!-- codex:plan -->",
        "reviewContext": {
            "summary": "2 threads",
            "reviewThreads": [{"summary": "rename x", "author": "alice"}],
            "failingChecks": [{"name": "ci/test", "conclusion": "failure"}],
            "additionalNotes": ["mergeable_state=blocked"],
        },
    }
    assert "deliveryId" not in message
    assert codex_task.from_task_message(message, delivery_id="d-1") == task


def test_task_message_without_issued_at_uses_now() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert codex_task.to_task_message(_task(), now=now)["issuedAt"] == "2026-01-02T03:04:05Z"


def test_stage_names() -> None:
    assert codex_task.stage_name(2) == "CODEX_TASK_STAGE_IMPLEMENTATION"
    assert codex_task.short_stage_name(2) == "IMPLEMENTATION"
    assert codex_task.stage_name(42) == "42"
    assert codex_task.enum_for(Stage.REVIEW) == pb.CODEX_TASK_STAGE_REVIEW
