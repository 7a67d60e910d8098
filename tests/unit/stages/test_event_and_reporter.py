"""The stage's event file and its reports: every field checked and named; reports retried on timeouts,
429 and 5xx, final on other answers, kept in the log when the run has nowhere to report."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from facteur.domain.stages import Stage
from facteur.stages.event import InvalidEvent, load_event, parse_event
from facteur.stages.reporter import Reporter

RUN_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def event(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "stage": "implementation",
        "repository": "demo/calc",
        "base": "main",
        "head": "facteur/idea-1-add",
        "issueNumber": 7,
        "issueTitle": "Add add",
        "facteur": {
            "runId": str(RUN_ID),
            "ideaId": str(uuid.uuid4()),
            "taskId": str(uuid.uuid4()),
            "attempt": 2,
            "callbackUrl": "http://127.0.0.1:9/api/v1/runs/x/events",
            "callbackToken": "secret-token",
            "task": {"key": "add", "title": "Add", "acceptanceCriteria": ["works"], "dependsOn": []},
            "plan": {"version": 1, "markdown": "the plan"},
            "dependencies": [{"key": "base", "branch": "facteur/idea-1-base", "summary": "did it"}],
        },
    }
    document.update(changes)
    return document


def test_an_orchestrator_event_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event()))
    read = load_event(path)
    assert read.stage is Stage.IMPLEMENTATION and read.orchestrated
    assert (read.repository, read.base, read.head, read.issue_number) == (
        "demo/calc", "main", "facteur/idea-1-add", 7,
    )  # fmt: skip
    assert read.run.run_id == RUN_ID and read.run.attempt == 2
    assert read.task is not None and read.task.acceptance_criteria == ("works",)
    assert read.plan_markdown == "the plan"
    assert [d.branch for d in read.dependencies] == ["facteur/idea-1-base"]
    assert "secret-token" not in repr(read.run)


def test_a_froussard_event_keeps_its_prompt_and_proto_stage_names() -> None:
    read = parse_event(
        {
            "stage": "CODEX_TASK_STAGE_PLANNING",
            "prompt": "Plan it",
            "repository": "a/b",
            "head": "codex/issue-1",
            "issueNumber": "12",
        }
    )
    assert read.stage is Stage.PLANNING and not read.orchestrated
    assert read.issue_number == 12 and read.run.callback_url is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage": "deploying"}, "field 'stage' must name a stage"),
        ({"repository": "nope"}, "field 'repository' must be owner/name"),
        ({"head": None}, "field 'head' is required"),
        ({"issueNumber": -1}, "field 'issueNumber' must be a whole number"),
        ({"facteur": []}, "field 'facteur' must be an object"),
        ({"facteur": {"runId": "r"}}, "field 'runId' must be a UUID"),
        ({"facteur": {"callbackUrl": "file:///etc/passwd", "callbackToken": "t"}}, "must be an http(s) URL"),
        ({"facteur": {"callbackUrl": "http://h/x"}}, "'facteur.callbackToken' is required"),
        ({"facteur": {"attempt": 0}}, "'facteur.attempt' must be a whole number"),
        ({"facteur": {"task": {"title": "x"}}}, "field 'facteur.task.key' is required"),
        ({"facteur": {"task": {"key": "k", "paths": "a"}}}, "'facteur.task.paths' must be a list of strings"),
        ({"facteur": {"dependencies": [{"key": "k"}]}}, "'facteur.dependencies[0].branch' is required"),
        ({"facteur": {"plan": "text"}}, "'facteur.plan' must be an object"),
    ],
)
def test_a_bad_event_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(event(**changes))
    assert message in caught.value.message


def test_an_unreadable_event_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidEvent, match="does not exist"):
        load_event(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidEvent, match="is not JSON"):
        load_event(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        load_event(tmp_path / "list.json")


class Server:
    """Answers each POST with the next status of ``statuses`` (then 202), recording what arrived."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[str, dict[str, Any]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.received.append((request.headers["authorization"], json.loads(request.content)))
        status = self.statuses.pop(0) if self.statuses else 202
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, json={"problems": ["bad"]} if status == 422 else {"ok": True})


def reporter(server: Server, attempts: int = 4) -> tuple[Reporter, list[float]]:
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)

    run = parse_event(event()).run
    return Reporter(run, attempts=attempts, transport=httpx.MockTransport(server.handle), sleep=sleep), naps


async def test_reports_are_retried_with_backoff_then_delivered_once_with_the_same_id() -> None:
    server = Server(503, 0, 429)
    sent, naps = reporter(server)
    answer = await sent.send("heartbeat")
    assert answer is not None and answer.status == 202
    assert [body["id"] for _, body in server.received] == ["heartbeat-1"] * 4
    assert naps == [0.5, 1.0, 2.0]
    assert {auth for auth, _ in server.received} == {"Bearer secret-token"}
    sent.heartbeat()
    await sent.flush()
    assert server.received[-1][1]["id"] == "heartbeat-2"
    await sent.aclose()


async def test_background_reports_go_out_in_order_before_the_outcome() -> None:
    server = Server(503)  # the first one is retried: the rest wait behind it
    sent, _ = reporter(server)
    sent.started()
    sent.progress("half way", [{"text": "a", "done": True}])
    sent.heartbeat()
    sent.heartbeat()  # one heartbeat waiting is enough
    sent.usage(3, 4, 0.5)
    await sent.completed(succeeded=True, summary="done")
    kinds = [body["id"] for _, body in server.received]
    assert kinds == ["started", "started", "progress-1", "heartbeat-1", "usage-1", "completed"]
    await sent.aclose()


async def test_a_report_that_never_gets_through_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(500, 500, 500)
    sent, _ = reporter(server, attempts=3)
    sent.started()
    await sent.flush()
    assert len(server.received) == 3
    assert "run report not delivered: type=started id=started attempts=3 problem=HTTP 500" in caplog.text
    assert await sent.send("heartbeat") is not None  # the next one goes out
    await sent.aclose()


async def test_a_refusal_is_final_and_its_problems_are_read() -> None:
    server = Server(422)
    sent, naps = reporter(server)
    answer = await sent.plan("no tasks")
    assert answer is not None and answer.status == 422 and answer.problems == ["bad"]
    assert len(server.received) == 1 and naps == []
    await sent.aclose()


async def test_completed_carries_the_outcome_and_usage_skips_nothing_to_say() -> None:
    server = Server()
    sent, _ = reporter(server)
    sent.usage(0, 0, 0.0)
    sent.usage(10, 5, 0.0123456789)
    await sent.completed(succeeded=False, summary="it broke", branch="b", pull_request=None)
    bodies = [body for _, body in server.received]
    assert bodies[0] == {
        "id": "usage-1",
        "type": "usage",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.012346,
    }
    assert bodies[1] == {
        "id": "completed", "type": "completed", "outcome": "failed", "summary": "it broke", "artifacts": [],
        "branch": "b",
    }  # fmt: skip
    await sent.aclose()


async def test_without_a_callback_url_reports_stay_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    run = parse_event(event(facteur={})).run
    sent = Reporter(run)
    sent.started()
    await sent.flush()
    assert await sent.completed(succeeded=True, summary="done") is None
    assert "run report kept in the log (no callback URL): type=started id=started" in caplog.text
    assert "type=completed id=completed" in caplog.text
    await sent.aclose()
