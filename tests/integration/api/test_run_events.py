"""POST /api/v1/runs/{id}/events: a stage run reports about itself, as a stage runner would."""

from __future__ import annotations

import json
import uuid
from typing import Any

from facteur.domain.plans import plan_from_json, render_plan
from facteur.domain.run_reports import run_token
from facteur.settings import load_settings
from tests.integration.api.test_codex_tasks import PROTOBUF, task_bytes
from tests.support.app import Running, running_app

ADMIN = "admin-token-123"


def settings_for(url: str) -> Any:
    return load_settings(
        environ={
            "FACTEUR_DATABASE__URL": url,
            "FACTEUR_EXECUTOR__KIND": "none",
            "FACTEUR_BUS__OUTBOX__RELAY_ENABLED": "false",
            "FACTEUR_SERVER__API_TOKEN": ADMIN,
        }
    )


async def new_run(running: Running) -> uuid.UUID:
    response = await running.client.post(
        "/codex/tasks", content=task_bytes(delivery_id=str(uuid.uuid4())), headers=PROTOBUF
    )
    assert response.status_code == 202
    return uuid.UUID(response.json()["runId"])


async def post(running: Running, run_id: uuid.UUID, body: Any, token: str | None = None) -> Any:
    token = token if token is not None else run_token(running.runtime.callback_secret, run_id)
    return await running.client.post(
        f"/api/v1/runs/{run_id}/events",
        content=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_a_run_reports_its_life(database_url: str) -> None:
    async with running_app(settings_for(database_url)) as running:
        run_id = await new_run(running)
        store = running.runtime.store

        started = await post(running, run_id, {"id": "e1", "type": "started"})
        assert started.status_code == 202, started.text
        assert started.json()["runStatus"] == "running"
        assert started.json()["duplicate"] is False
        again = await post(running, run_id, {"id": "e1", "type": "started"})
        assert again.status_code == 202 and again.json()["duplicate"] is True

        progress = await post(
            running,
            run_id,
            {
                "id": "p1",
                "type": "progress",
                "text": "tests written",
                "checklist": [{"text": "a", "done": True}],
            },
        )
        assert progress.status_code == 202
        usage = await post(
            running,
            run_id,
            {"id": "u1", "type": "usage", "input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.42},
        )
        assert usage.status_code == 202

        plan = render_plan(
            plan_from_json(
                {
                    "tasks": [
                        {"key": "a", "title": "A", "description": "do a", "acceptance_criteria": ["a works"]},
                        {
                            "key": "b",
                            "title": "B",
                            "description": "do b",
                            "depends_on": ["a"],
                            "acceptance_criteria": ["b works"],
                        },
                    ]
                }
            )
        )
        stored = await post(running, run_id, {"id": "plan-1", "type": "plan", "markdown": plan})
        assert stored.status_code == 202, stored.text
        assert stored.json()["planVersion"] == 1
        cyclic = plan.replace("- Depends on: none", "- Depends on: b", 1)
        assert cyclic != plan
        rejected = await post(running, run_id, {"id": "plan-2", "type": "plan", "markdown": cyclic})
        assert rejected.status_code == 422
        assert any("cycle" in p for p in rejected.json()["problems"])

        done = await post(
            running,
            run_id,
            {
                "id": "c1",
                "type": "completed",
                "outcome": "succeeded",
                "summary": "planned",
                "branch": "codex/issue-7-abc",
                "artifacts": [{"name": "plan", "path": "PLAN.md"}],
            },
        )
        assert done.json()["runStatus"] == "succeeded" and done.json()["statusChanged"] is True
        late = await post(running, run_id, {"id": "h9", "type": "heartbeat"})
        assert late.json()["runStatus"] == "succeeded" and late.json()["statusChanged"] is False

        run = await store.get_run(run_id)
        assert (run.tokens_in, run.tokens_out, run.cost_usd, run.summary) == (1200, 300, 0.42, "planned")
        idea = await store.get_idea(run.idea_id)
        assert (idea.tokens_in, idea.cost_usd) == (1200, 0.42)
        assert [p.version for p in await store.list_plans(run.idea_id)] == [1]
        kinds = [e.kind for e in await store.list_events(run_id=run_id)]
        for kind in (
            "run.started",
            "run.progress",
            "run.usage",
            "run.plan",
            "plan.rejected",
            "run.completed",
        ):
            assert kind in kinds
        execution = [
            json.loads(e.message.value)
            for e in await store.pending_outbox(100)
            if e.message.topic == "codex.execution" and e.message.key == f"run-{run_id}".encode()
        ]
        assert [m["status"] for m in execution][-2:] == ["running", "succeeded"]


async def test_bad_tokens_ids_and_bodies_get_4xx(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url)) as running:
        run_id = await new_run(running)
        other = await new_run(running)
        wrong = await post(running, run_id, {"id": "e", "type": "started"}, token=run_token(b"nope", run_id))
        assert wrong.status_code == 401
        borrowed = await post(
            running,
            run_id,
            {"id": "e", "type": "started"},
            token=run_token(running.runtime.callback_secret, other),
        )
        assert borrowed.status_code == 401
        response = await running.client.post(f"/api/v1/runs/{run_id}/events", content=b"{}")
        assert response.status_code == 401
        admin = await post(running, run_id, {"id": "e", "type": "heartbeat"}, token=ADMIN)
        assert admin.status_code == 202

        missing = uuid.uuid4()
        unknown = await post(running, missing, {"id": "e", "type": "started"}, token=ADMIN)
        assert unknown.status_code == 404
        not_uuid = await running.client.post(
            "/api/v1/runs/nope/events", content=b"{}", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert not_uuid.status_code == 404

        for body, needle in [
            (b"{nope", "not JSON"),
            ({"type": "started"}, "'id' is required"),
            ({"id": "x", "type": "exploded"}, "field 'type' must be one of"),
            ({"id": "x", "type": "completed", "outcome": "meh"}, "'outcome' must be succeeded or failed"),
            ({"id": "x", "type": "usage", "input_tokens": -1}, "input_tokens"),
            ({"id": "x", "type": "usage", "cost_usd": "free"}, "cost_usd"),
            ({"id": "x", "type": "plan"}, "'markdown' is required"),
            ({"id": "x", "type": "progress", "checklist": [{"done": True}]}, "checklist item 0"),
        ]:
            response = await post(running, run_id, body)
            assert response.status_code == 400, body
            assert needle in response.json()["detail"], (body, response.json())
        assert (await running.runtime.store.get_run(run_id)).tokens_in == 0
