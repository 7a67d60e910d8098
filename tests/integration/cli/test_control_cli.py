"""``facteur idea pause|resume|cancel|approve|plan`` and ``facteur task retry|cancel`` against the app in
process: the CLI's HTTP transport hook is bridged to the app (with its real store) running on the test's
event loop, and each command runs in a worker thread as it would in its own process."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from facteur.cli import ideas as ideas_cli
from facteur.cli.main import app
from facteur.domain.plans import plan_from_json, render_plan
from facteur.executors.none import NoneExecutor
from tests.integration.api.test_ideas_api import AUTH, PLAN_JSON, TOKEN, settings_for, spec
from tests.support.app import Running, running_app

SINGLE: dict[str, Any] = {"tasks": [{"key": "x", "title": "X", "acceptance_criteria": ["x works"]}]}


class Bridge(httpx.BaseTransport):
    """A synchronous transport that hands each request to the app's client on the test's event loop."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.requests: list[tuple[str, str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        self.requests.append((request.method, request.url.path, json.loads(content) if content else None))

        async def send() -> httpx.Response:
            response = await self.client.request(
                request.method, request.url.path, headers=request.headers, content=content
            )
            await response.aread()
            return response

        answer = asyncio.run_coroutine_threadsafe(send(), self.loop).result(timeout=60)
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in {"content-encoding"}}
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)


@dataclass
class Cli:
    running: Running
    bridge: Bridge

    async def __call__(self, *args: str, token: str | None = TOKEN) -> Result:
        env = {"FACTEUR_API_TOKEN": token} if token else {}
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)

    async def json(self, *args: str) -> dict[str, Any]:
        result = await self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    async def submit(self, document: dict[str, Any] | None = PLAN_JSON, **changes: Any) -> dict[str, Any]:
        body = spec(**changes) if document is None else spec(plan_json=document, **changes)
        response = await self.running.client.post("/api/v1/ideas", json=body, headers=AUTH)
        assert response.status_code == 201, response.text
        idea: dict[str, Any] = response.json()
        return idea

    async def events(self, idea_id: str) -> list[dict[str, Any]]:
        response = await self.running.client.get(f"/api/v1/ideas/{idea_id}/events?limit=1000", headers=AUTH)
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FACTEUR_"):
            monkeypatch.delenv(name)


async def open_cli(
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    *,
    executor: NoneExecutor | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Cli]:
    settings = settings_for(url, FACTEUR_SCHEDULER__ENABLED="false", **(env or {}))
    async with running_app(settings, executor=executor) as running:
        bridge = Bridge(running.client, asyncio.get_running_loop())
        monkeypatch.setattr(ideas_cli, "transport", bridge)
        yield Cli(running, bridge)


@pytest.fixture
async def cli(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> AsyncIterator[Cli]:
    async for opened in open_cli(monkeypatch, sqlite_url):
        yield opened


@pytest.fixture
async def gated_cli(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> AsyncIterator[Cli]:
    async for opened in open_cli(monkeypatch, sqlite_url, env={"FACTEUR_APPROVALS__REQUIRED": "true"}):
        yield opened


def states(idea: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["state"] for t in idea["tasks"]}


def task_id(idea: dict[str, Any], key: str) -> str:
    found: str = next(t["id"] for t in idea["tasks"] if t["key"] == key)
    return found


def clean(result: Result) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# --- idea pause, resume, cancel -----------------------------------------------------------------------------


async def test_pause_and_resume_print_the_idea(cli: Cli) -> None:
    idea = await cli.submit()
    paused = await cli("idea", "pause", idea["id"], "--reason", "hold on", "--by", "alice")
    assert paused.exit_code == 0, paused.stderr
    clean(paused)
    lines = paused.stdout.splitlines()
    assert lines[0] == "paused"
    assert "Faster widgets" in lines[1] and idea["id"] in lines[1]
    assert lines[2] == "awaiting_dependencies (paused) · acme/widgets · priority 1 · api"
    assert "plan v1 (approved); versions [1]" in paused.stdout
    # the request as sent, and as recorded
    assert cli.bridge.requests[-1] == (
        "POST",
        f"/api/v1/ideas/{idea['id']}/pause",
        {"reason": "hold on", "by": "alice"},
    )
    [event] = [e for e in await cli.events(idea["id"]) if e["kind"] == "idea.paused"]
    assert (event["actor"], event["payload"]) == ("alice", {"by": "alice", "reason": "hold on"})

    again = await cli.json("idea", "pause", idea["id"])
    assert again["paused"] is True and again["id"] == idea["id"]

    resumed = await cli("idea", "resume", idea["id"])
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "resumed"
    assert resumed.stdout.splitlines()[2].startswith("awaiting_dependencies · ")
    as_json = await cli.json("idea", "resume", idea["id"])
    assert as_json["paused"] is False
    resumed_events = [e for e in await cli.events(idea["id"]) if e["kind"] == "idea.resumed"]
    assert [(e["actor"], e["payload"]["by"]) for e in resumed_events] == [("cli", "cli")]


async def test_cancel_stops_the_run_and_a_finished_idea_refuses(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    executor = NoneExecutor()
    async for cli in open_cli(monkeypatch, sqlite_url, executor=executor):
        idea = await cli.submit(SINGLE)
        await cli.running.runtime.scheduler.pass_once()
        cancelled = await cli("idea", "cancel", idea["id"], "--reason", "changed my mind")
        assert cancelled.exit_code == 0, cancelled.stderr
        clean(cancelled)
        assert cancelled.stdout.splitlines()[0] == "cancelled"
        assert cancelled.stdout.splitlines()[2].startswith("cancelled · acme/widgets")
        shown = await cli.json("idea", "show", idea["id"])
        [run] = shown["runs"]
        assert run["status"] == "cancelled" and run["workflow_name"] in executor.cancelled
        assert states(shown) == {"x": "cancelled"}

        again = await cli.json("idea", "cancel", idea["id"])
        assert again == shown

        refused = await cli("idea", "pause", idea["id"])
        assert refused.exit_code == 2
        clean(refused)
        assert f"error: POST /api/v1/ideas/{idea['id']}/pause: 409 conflict" in refused.stderr
        assert "a finished idea cannot be paused" in refused.stderr
        assert refused.stdout == ""


async def test_unknown_or_malformed_ids_and_no_token_exit_with_the_status(cli: Cli) -> None:
    missing = str(uuid.uuid4())
    for args in (
        ("idea", "pause", missing),
        ("idea", "resume", missing),
        ("idea", "cancel", missing),
        ("idea", "approve", missing),
        ("task", "retry", missing),
        ("task", "cancel", missing),
    ):
        result = await cli(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        clean(result)
        assert ": 404 not found" in result.stderr and missing in result.stderr
        assert result.stdout == ""

    malformed = await cli("task", "retry", "not-a-uuid")
    assert malformed.exit_code == 2 and "400 invalid request" in malformed.stderr
    clean(malformed)

    idea = await cli.submit()
    no_token = await cli("idea", "pause", idea["id"], token=None)
    assert no_token.exit_code == 1 and "401 unauthorized" in no_token.stderr
    clean(no_token)
    assert (await cli.json("idea", "show", idea["id"]))["paused"] is False


# --- idea approve and plan ----------------------------------------------------------------------------------


async def test_approve_builds_the_tasks_and_reject_ends_the_idea(gated_cli: Cli) -> None:
    cli = gated_cli
    idea = await cli.submit()
    assert idea["state"] == "awaiting_approval"
    approved = await cli("idea", "approve", idea["id"], "--reason", "fine", "--by", "alice")
    assert approved.exit_code == 0, approved.stderr
    clean(approved)
    assert approved.stdout.splitlines()[0] == "plan approved"
    assert approved.stdout.splitlines()[2].startswith("awaiting_dependencies · ")
    assert "approval: plan v1 approved by alice (fine)" in approved.stdout
    assert cli.bridge.requests[-1][2] == {
        "decision": "approve",
        "plan_version": None,
        "reason": "fine",
        "by": "alice",
    }
    shown = await cli.json("idea", "show", idea["id"])
    assert states(shown) == {"a": "ready", "b": "ready", "c": "pending"}

    # approving it again: the idea is past approval
    again = await cli("idea", "approve", idea["id"])
    assert again.exit_code == 2
    assert "409 conflict" in again.stderr and "is awaiting_dependencies" in again.stderr

    other = await cli.submit(title="too broad")
    rejected = await cli.json("idea", "approve", other["id"], "--reject", "--reason", "x")
    assert (rejected["state"], rejected["tasks"]) == ("cancelled", [])
    [approval] = rejected["approvals"]
    assert (approval["decision"], approval["decided_by"], approval["reason"]) == ("rejected", "cli", "x")

    third = await cli.submit(title="versions")
    unknown = await cli("idea", "approve", third["id"], "--plan-version", "9")
    assert unknown.exit_code == 2 and "400 invalid payload" in unknown.stderr
    assert "no plan version 9" in unknown.stderr
    human = await cli("idea", "approve", third["id"], "--reject", "--plan-version", "1")
    assert human.exit_code == 0, human.stderr
    assert human.stdout.splitlines()[0] == "plan rejected"
    assert "approval: plan v1 rejected by cli (no reason given)" in human.stdout


async def test_plan_sends_a_json_or_markdown_file(gated_cli: Cli, tmp_path: Path) -> None:
    cli = gated_cli
    idea = await cli.submit()
    as_json = tmp_path / "plan.json"
    as_json.write_text(json.dumps(SINGLE))
    added = await cli("idea", "plan", idea["id"], str(as_json))
    assert added.exit_code == 0, added.stderr
    clean(added)
    assert added.stdout.splitlines()[0] == "plan version added"
    assert "plan v2 (not approved); versions [1, 2]" in added.stdout
    assert cli.bridge.requests[-1][2] == {"plan_json": SINGLE}

    as_markdown = tmp_path / "plan.md"
    as_markdown.write_text(render_plan(plan_from_json(SINGLE)))
    third = await cli.json("idea", "plan", idea["id"], str(as_markdown))
    assert third["plan_versions"] == [1, 2, 3] and third["state"] == "awaiting_approval"
    assert cli.bridge.requests[-1][2] == {"plan": as_markdown.read_text()}
    approved = await cli.json("idea", "approve", idea["id"], "--plan-version", "3")
    assert approved["plan"]["version"] == 3 and states(approved) == {"x": "ready"}

    cyclic = {"tasks": [{**t, "depends_on": ["c"]} if t["key"] == "a" else t for t in PLAN_JSON["tasks"]]}
    invalid = tmp_path / "cyclic.json"
    invalid.write_text(json.dumps(cyclic))
    refused = await cli("idea", "plan", idea["id"], str(invalid))
    assert refused.exit_code == 2
    clean(refused)
    assert f"POST /api/v1/ideas/{idea['id']}/plans: 400 invalid plan" in refused.stderr
    assert any(line.startswith("  - ") and "cycle" in line for line in refused.stderr.splitlines())

    broken = tmp_path / "broken.json"
    broken.write_text("{tasks: nope")
    not_json = await cli("idea", "plan", idea["id"], str(broken))
    assert not_json.exit_code == 2 and "is not JSON" in not_json.stderr
    clean(not_json)
    absent = await cli("idea", "plan", idea["id"], str(tmp_path / "absent.md"))
    assert absent.exit_code == 2
    assert (await cli.json("idea", "show", idea["id"]))["plan_versions"] == [1, 2, 3]


# --- task retry and cancel ----------------------------------------------------------------------------------


async def test_task_cancel_blocks_dependents_and_retry_refuses_a_ready_task(cli: Cli) -> None:
    idea = await cli.submit()
    refused = await cli("task", "retry", task_id(idea, "b"))
    assert refused.exit_code == 2
    clean(refused)
    assert f"error: POST /api/v1/tasks/{task_id(idea, 'b')}/retry: 409 conflict" in refused.stderr
    assert "task b is ready: only a failed or blocked task can be retried" in refused.stderr
    assert refused.stdout == ""

    cancelled = await cli("task", "cancel", task_id(idea, "a"), "--reason", "not needed")
    assert cancelled.exit_code == 0, cancelled.stderr
    clean(cancelled)
    assert cancelled.stdout.splitlines()[0] == "cancelled"
    assert cli.bridge.requests[-1][2] == {"reason": "not needed", "by": "cli"}
    shown = await cli.json("idea", "show", idea["id"])
    assert states(shown) == {"a": "cancelled", "b": "ready", "c": "blocked"}

    refused_c = await cli("task", "retry", task_id(idea, "c"), "--by", "alice")
    assert refused_c.exit_code == 2 and "task c depends on cancelled task(s) a" in refused_c.stderr
    as_json = await cli.json("task", "cancel", task_id(idea, "b"), "--reason", "also")
    assert states(as_json) == {"a": "cancelled", "b": "cancelled", "c": "blocked"}
    again = await cli("task", "cancel", task_id(idea, "a"))
    assert again.exit_code == 2 and "task a is cancelled: it cannot be cancelled" in again.stderr


async def test_task_retry_unblocks_an_exhausted_task(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    env = {"FACTEUR_SCHEDULER__MAX_ATTEMPTS": "1", "FACTEUR_SCHEDULER__ON_EXHAUSTED": "block"}
    async for cli in open_cli(monkeypatch, sqlite_url, env=env):
        idea = await cli.submit(SINGLE)
        await cli.running.runtime.scheduler.pass_once()
        [run] = (await cli.json("idea", "show", idea["id"]))["runs"]
        for body in ({"id": "s", "type": "started"}, {"id": "f", "type": "completed", "outcome": "failed"}):
            response = await cli.running.client.post(
                f"/api/v1/runs/{run['id']}/events", json=body, headers=AUTH
            )
            assert response.status_code == 202, response.text
        assert states(await cli.json("idea", "show", idea["id"])) == {"x": "blocked"}

        retried = await cli("task", "retry", task_id(idea, "x"))
        assert retried.exit_code == 0, retried.stderr
        clean(retried)
        assert retried.stdout.splitlines()[0] == "retried"
        shown = await cli.json("idea", "show", idea["id"])
        [task] = shown["tasks"]
        assert (task["state"], task["attempts"]) == ("ready", 0)


async def test_human_output_shows_whole_task_ids(cli: Cli) -> None:
    """``facteur task retry|cancel`` take a task id that ``facteur idea show`` (and every verb's human output)
    lists: it must be printed whole, not cut to fit an 80-column terminal or a pipe."""
    idea = await cli.submit()
    result = await cli("idea", "pause", idea["id"])
    assert result.exit_code == 0, result.stderr
    for task in idea["tasks"]:
        assert task["id"] in result.stdout, result.stdout
