"""POST /codex/tasks over HTTP: recording, dispatch, idempotency, and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from facteur.domain import codex_task
from facteur.domain.events import verify_chain
from facteur.domain.run_reports import run_token
from facteur.domain.runs import RunStatus
from facteur.domain.tasks import TaskState
from facteur.executors.none import NoneExecutor
from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb
from facteur.settings import Settings, load_settings
from facteur.store.memory import MemoryStore
from tests.support.app import FlakyExecutor, Running, running_app
from tests.support.fakes import FakeClock, SequentialIds
from tests.support.postgres import PostgresUnavailable, start_postgres
from tests.support.services import shared_path, unavailable

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def canary() -> bytes:
    return base64.b64decode(shared_path("fixtures", "codex-task", "dry-run-0001.b64").read_text())


def task_bytes(**fields: Any) -> bytes:
    values: dict[str, Any] = {
        "stage": pb.CODEX_TASK_STAGE_PLANNING,
        "prompt": "Plan the widget speed-up",
        "repository": "acme/widgets",
        "issue_number": 7,
        "issue_title": "Faster widgets",
        "delivery_id": "delivery-7",
        "head": "codex/issue-7-abc",
        "base": "main",
    }
    values.update(fields)
    return pb.CodexTask(**values).SerializeToString()


def settings_for(url: str, **env: str) -> Settings:
    return load_settings(environ={"FACTEUR_DATABASE__URL": url, "FACTEUR_EXECUTOR__KIND": "none", **env})


@pytest.fixture
def executor() -> NoneExecutor:
    return NoneExecutor()


@pytest.fixture
async def api(
    database_url: str, clock: FakeClock, ids: SequentialIds, executor: NoneExecutor
) -> AsyncIterator[Running]:
    async with running_app(settings_for(database_url), clock=clock, ids=ids, executor=executor) as running:
        yield running


async def test_canary_is_recorded_and_submitted(
    api: Running, executor: NoneExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="facteur")
    response = await api.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {
        "stage",
        "namespace",
        "workflowName",
        "submittedAt",
        "duplicate",
        "ideaId",
        "taskId",
        "runId",
    }
    assert body["stage"] == "planning"
    assert body["namespace"] == "none"
    assert body["workflowName"].startswith("codex-planning-20261121-120000-")
    assert body["submittedAt"] == "2026-11-21T12:00:00Z"
    assert body["duplicate"] is False

    store = api.runtime.store
    run = await store.get_run(_uuid(body["runId"]))
    assert run.status is RunStatus.SUBMITTED
    assert run.workflow_name == body["workflowName"]
    assert run.delivery_id == "dry-run-0001"
    idea = await store.get_idea(_uuid(body["ideaId"]))
    assert (idea.source_ref, idea.title, idea.repository) == (
        "proompteng/lab#999",
        "Codex dry run",
        "proompteng/lab",
    )
    task = await store.get_task(_uuid(body["taskId"]))
    assert (task.key, task.state) == ("planning", TaskState.QUEUED)

    [submitted] = executor.submitted.values()
    assert submitted.name == body["workflowName"]
    assert submitted.raw_event == canary()
    event = json.loads(submitted.event_body)
    assert event["stage"] == "planning"
    assert event["issueNumber"] == 999
    assert event["deliveryId"] == "dry-run-0001"
    callback = event["facteur"].pop("callbackUrl"), event["facteur"].pop("callbackToken")
    assert event["facteur"] == {
        "runId": body["runId"],
        "ideaId": body["ideaId"],
        "taskId": body["taskId"],
        "stage": "planning",
        "workflowName": body["workflowName"],
        "attempt": 1,
    }
    # the run reports to this server with its own token
    assert callback[0] == f"http://127.0.0.1:8080/api/v1/runs/{body['runId']}/events"
    assert callback[1] == run_token(api.runtime.callback_secret, _uuid(body["runId"]))

    events = await store.list_events()
    assert [e.kind for e in events] == ["idea.registered", "codex_task.accepted", "run.submitted"]
    assert verify_chain(events) is None

    messages = [r.getMessage() for r in caplog.records]
    assert (
        "codex task received: stage=CODEX_TASK_STAGE_PLANNING repo=proompteng/lab issue=999 "
        "delivery=dry-run-0001" in messages
    )
    assert (
        f"workflow submitted: stage=PLANNING repo=proompteng/lab issue=999 workflow={body['workflowName']} "
        "namespace=none" in messages
    )


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


async def test_replay_returns_the_first_answer_and_submits_nothing(
    api: Running, executor: NoneExecutor, clock: FakeClock
) -> None:
    first = await api.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
    clock.advance(3600)
    second = await api.client.post("/codex/tasks", content=canary())  # no content type, as KafkaSource posts

    assert second.status_code == 202
    assert second.json() == {**first.json(), "duplicate": True}
    assert len(executor.submitted) == 1
    assert len(await api.runtime.store.list_runs()) == 1


async def test_replay_after_restart(sqlite_url: str, clock: FakeClock, ids: SequentialIds) -> None:
    executor = NoneExecutor()
    async with running_app(settings_for(sqlite_url), clock=clock, ids=ids, executor=executor) as first_life:
        first = await first_life.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
    fresh = NoneExecutor()
    async with running_app(settings_for(sqlite_url), clock=clock, ids=ids, executor=fresh) as second_life:
        again = await second_life.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
        runs = await second_life.runtime.store.list_runs()
    assert again.json() == {**first.json(), "duplicate": True}
    assert fresh.submitted == {}
    assert len(runs) == 1


async def test_concurrent_identical_requests_submit_once(api: Running, executor: NoneExecutor) -> None:
    responses = await asyncio.gather(
        *(api.client.post("/codex/tasks", content=canary(), headers=PROTOBUF) for _ in range(25))
    )
    assert {r.status_code for r in responses} == {202}
    bodies = [r.json() for r in responses]
    assert sum(1 for b in bodies if not b["duplicate"]) == 1
    assert len({b["workflowName"] for b in bodies}) == 1
    assert len({b["runId"] for b in bodies}) == 1
    assert len(executor.submitted) == 1
    assert len(await api.runtime.store.list_runs()) == 1


async def test_proto_json_and_task_message_json_are_accepted(api: Running, executor: NoneExecutor) -> None:
    proto_json = codex_task.to_proto_json(codex_task.decode_binary(task_bytes(delivery_id="json-1")))
    first = await api.client.post("/codex/tasks", json=proto_json)
    assert first.status_code == 202, first.text
    message = {
        "stage": "planning",
        "repository": "acme/widgets",
        "issueNumber": 8,
        "deliveryId": "json-2",
        "prompt": "Plan",
    }
    second = await api.client.post(
        "/codex/tasks",
        content=json.dumps(message),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert second.status_code == 202, second.text
    assert len(executor.submitted) == 2


async def test_disabled_planning_is_recorded_without_a_workflow(
    database_url: str, clock: FakeClock, ids: SequentialIds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="facteur")
    executor = NoneExecutor()
    settings = settings_for(database_url, FACTEUR_CODEX_ENABLE_PLANNING_ORCHESTRATION="false")
    async with running_app(settings, clock=clock, ids=ids, executor=executor) as running:
        response = await running.client.post("/codex/tasks", content=task_bytes(), headers=PROTOBUF)
        body = response.json()
        run = await running.runtime.store.get_run(_uuid(body["runId"]))
    assert response.status_code == 202
    assert (body["workflowName"], body["namespace"], body["submittedAt"]) == (None, None, None)
    assert (run.status, run.executor) == (RunStatus.QUEUED, None)
    assert executor.submitted == {}
    assert any(r.getMessage().startswith("codex planning dispatch disabled") for r in caplog.records)


@pytest.mark.parametrize("stage", [pb.CODEX_TASK_STAGE_IMPLEMENTATION, pb.CODEX_TASK_STAGE_REVIEW])
async def test_other_stages_are_recorded_for_the_orchestrator(
    api: Running, executor: NoneExecutor, stage: int
) -> None:
    response = await api.client.post("/codex/tasks", content=task_bytes(stage=stage), headers=PROTOBUF)
    body = response.json()
    assert response.status_code == 202
    assert body["workflowName"] is None
    assert body["stage"] == codex_task.short_stage_name(stage).lower()
    run = await api.runtime.store.get_run(_uuid(body["runId"]))
    assert run.status is RunStatus.QUEUED
    assert executor.submitted == {}


async def test_unreachable_executor_keeps_the_run_queued_until_resubmitted(
    sqlite_url: str, clock: FakeClock, ids: SequentialIds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="facteur")
    flaky = FlakyExecutor(failures=1)
    async with running_app(settings_for(sqlite_url), clock=clock, ids=ids, executor=flaky) as running:
        response = await running.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
        body = response.json()
        store = running.runtime.store
        run = await store.get_run(_uuid(body["runId"]))
        assert response.status_code == 202
        assert body["workflowName"] is not None
        assert run.status is RunStatus.QUEUED
        assert any("workflow submission failed" in r.getMessage() for r in caplog.records)

        assert await running.runtime.dispatcher.resubmit_pending() == 1
        run = await store.get_run(run.id)
        assert run.status is RunStatus.SUBMITTED
        assert list(flaky.submitted) == [body["workflowName"]]
        kinds = [e.kind for e in await store.list_events(run_id=run.id)]
        assert kinds == ["codex_task.accepted", "run.submit_failed", "run.submitted"]
        # nothing left to resubmit
        assert await running.runtime.dispatcher.resubmit_pending() == 0


BAD_REQUESTS: list[tuple[str, bytes, dict[str, str], int, str, str]] = [
    ("empty", b"", PROTOBUF, 400, "empty payload", ""),
    ("corrupt protobuf", b"\xff\xff\xff\xff", PROTOBUF, 400, "invalid payload", "CodexTask"),
    ("text as protobuf", b"hello world", {}, 400, "invalid payload", ""),
    ("bad json", b"{nope", {"Content-Type": "application/json"}, 400, "invalid payload", "not valid JSON"),
    ("json array", b"[]", {"Content-Type": "application/json"}, 400, "invalid payload", "JSON object"),
    ("unknown stage", b'{"stage": 0}', {"Content-Type": "application/json"}, 400, "invalid payload", "stage"),
]


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "error", "detail"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
async def test_bad_payloads_get_a_clear_4xx_and_record_nothing(
    api: Running, case: str, body: bytes, headers: dict[str, str], status: int, error: str, detail: str
) -> None:
    response = await api.client.post("/codex/tasks", content=body, headers=headers)
    assert response.status_code == status, response.text
    document = response.json()
    assert document["error"] == error
    assert detail in (document["detail"] or "")
    assert await api.runtime.store.list_runs() == []


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"stage": pb.CODEX_TASK_STAGE_UNSPECIFIED}, "unknown stage CODEX_TASK_STAGE_UNSPECIFIED"),
        ({"delivery_id": ""}, "missing delivery_id"),
        ({"repository": "widgets"}, "owner/name"),
        ({"issue_number": 0}, "issue_number"),
    ],
)
async def test_incomplete_tasks_are_rejected_naming_the_field(
    api: Running, fields: dict[str, Any], detail: str
) -> None:
    response = await api.client.post("/codex/tasks", content=task_bytes(**fields), headers=PROTOBUF)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


async def test_oversized_body_is_413(database_url: str) -> None:
    settings = settings_for(database_url, FACTEUR_SERVER__MAX_BODY_BYTES="2048")
    async with running_app(settings) as running:
        response = await running.client.post(
            "/codex/tasks", content=task_bytes(issue_body="x" * 4096), headers=PROTOBUF
        )
        assert response.status_code == 413
        assert response.json()["error"] == "payload too large"
        assert await running.runtime.store.list_runs() == []


async def test_unknown_routes_and_methods_answer_json(api: Running) -> None:
    missing = await api.client.get("/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not found")
    wrong = await api.client.get("/codex/tasks")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method not allowed")


async def test_health_and_identity(api: Running) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    identity = (await api.client.get("/")).json()
    assert identity["service"] == "facteur"
    assert {"version", "commit"} <= set(identity)


async def test_store_down_answers_503_and_loses_nothing(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    executor = NoneExecutor()
    async with running_app(load_settings(environ={}), clock=clock, store=store, executor=executor) as running:
        accepted = await running.client.post(
            "/codex/tasks", content=task_bytes(delivery_id="a"), headers=PROTOBUF
        )
        store.unavailable = True
        down = await running.client.post(
            "/codex/tasks", content=task_bytes(delivery_id="b"), headers=PROTOBUF
        )
        not_ready = await running.client.get("/readyz")
        store.unavailable = False
        replay = await running.client.post(
            "/codex/tasks", content=task_bytes(delivery_id="a"), headers=PROTOBUF
        )
    assert accepted.status_code == 202
    assert (down.status_code, down.json()["error"]) == (503, "store unavailable")
    assert not_ready.status_code == 503
    assert replay.json()["duplicate"] is True


async def test_postgres_stopped_and_restarted(clock: FakeClock, ids: SequentialIds) -> None:
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        unavailable(f"embedded PostgreSQL could not start: {exc}")
    try:
        server.execute("CREATE DATABASE outage")
        settings = settings_for(server.url("outage"), FACTEUR_DATABASE__TIMEOUT_SECONDS="2")
        async with running_app(settings, clock=clock, ids=ids, executor=NoneExecutor()) as running:
            before = await running.client.post(
                "/codex/tasks", content=task_bytes(delivery_id="a"), headers=PROTOBUF
            )
            await asyncio.to_thread(server.stop)
            down = await running.client.post(
                "/codex/tasks", content=task_bytes(delivery_id="b"), headers=PROTOBUF
            )
            ready_down = await running.client.get("/readyz")
            await asyncio.to_thread(server.start)
            after = await running.client.post(
                "/codex/tasks", content=task_bytes(delivery_id="b"), headers=PROTOBUF
            )
            replay = await running.client.post(
                "/codex/tasks", content=task_bytes(delivery_id="a"), headers=PROTOBUF
            )
            runs = await running.runtime.store.list_runs()
    finally:
        server.cleanup()
    assert before.status_code == 202
    assert (down.status_code, down.json()["error"]) == (503, "store unavailable")
    assert ready_down.status_code == 503
    assert after.status_code == 202
    assert after.json()["duplicate"] is False
    assert replay.json()["duplicate"] is True
    assert len(runs) == 2


async def test_server_starts_before_the_database_and_becomes_ready(clock: FakeClock) -> None:
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        unavailable(f"embedded PostgreSQL could not start: {exc}")
    try:
        server.execute("CREATE DATABASE late")
        await asyncio.to_thread(server.stop)
        settings = settings_for(server.url("late"), FACTEUR_DATABASE__TIMEOUT_SECONDS="1")
        async with running_app(settings, clock=clock, executor=NoneExecutor()) as running:
            early = await running.client.get("/readyz")
            early_post = await running.client.post("/codex/tasks", content=task_bytes(), headers=PROTOBUF)
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(20):
                while (await running.client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.1)
            late_post = await running.client.post("/codex/tasks", content=task_bytes(), headers=PROTOBUF)
    finally:
        server.cleanup()
    assert early.status_code == 503
    assert "database not migrated yet" in early.json()["detail"]
    assert early_post.status_code == 503
    assert late_post.status_code == 202


async def test_two_replicas_on_one_postgres_accept_a_delivery_once(pg_url: str, clock: FakeClock) -> None:
    executors = [NoneExecutor(), NoneExecutor()]
    settings = settings_for(pg_url)
    async with (
        running_app(settings, clock=clock, executor=executors[0]) as one,
        running_app(settings, clock=clock, executor=executors[1]) as two,
    ):
        responses = await asyncio.gather(
            *(
                replica.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)
                for _ in range(10)
                for replica in (one, two)
            )
        )
        runs = await one.runtime.store.list_runs()
    bodies = [r.json() for r in responses]
    assert sum(1 for b in bodies if not b["duplicate"]) == 1
    assert len({b["runId"] for b in bodies}) == 1
    assert len(runs) == 1
    assert sum(len(e.submitted) for e in executors) == 1


async def test_local_executor_outcome_is_recorded_on_the_run(
    sqlite_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    settings = load_settings(
        environ={
            "FACTEUR_DATABASE__URL": sqlite_url,
            "FACTEUR_EXECUTOR__LOCAL__WORKDIR": str(tmp_path / "runs"),
            "FACTEUR_EXECUTOR__LOCAL__COMMAND": "true",
        }
    )
    async with running_app(settings, clock=clock) as running:
        body = (await running.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)).json()
        store = running.runtime.store
        run_id = _uuid(body["runId"])
        async with asyncio.timeout(20):
            while (await store.get_run(run_id)).status is not RunStatus.SUCCEEDED:
                await asyncio.sleep(0.02)
        events = await store.list_events(run_id=run_id)
    kinds = [e.kind for e in events]
    assert kinds[0] == "codex_task.accepted"
    assert sorted(kinds[1:3]) == ["run.started", "run.submitted"]  # the process may start before we note it
    assert kinds[3:] == ["run.succeeded"]
    assert events[-1].payload["exit_code"] == "0"
    assert events[-1].payload["log"] == str(tmp_path / "runs" / body["workflowName"] / "run.log")


async def test_a_restart_submits_runs_left_queued(
    sqlite_url: str, clock: FakeClock, ids: SequentialIds
) -> None:
    down = FlakyExecutor(failures=1000)
    async with running_app(settings_for(sqlite_url), clock=clock, ids=ids, executor=down) as first_life:
        body = (await first_life.client.post("/codex/tasks", content=canary(), headers=PROTOBUF)).json()
        assert (await first_life.runtime.store.get_run(_uuid(body["runId"]))).status is RunStatus.QUEUED
    fresh = NoneExecutor()
    async with running_app(settings_for(sqlite_url), clock=clock, ids=ids, executor=fresh) as second_life:
        # submitted during start-up, before any request
        run = await second_life.runtime.store.get_run(_uuid(body["runId"]))
    assert run.status is RunStatus.SUBMITTED
    assert list(fresh.submitted) == [body["workflowName"]]
