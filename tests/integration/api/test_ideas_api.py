"""REST API v1 for ideas over HTTP: submit (with and without a plan, with the approval gate), show, list,
events, idempotency, authentication and bad input."""

from __future__ import annotations

import uuid
from typing import Any

from facteur.domain.events import verify_chain
from facteur.domain.plans import plan_from_json, render_plan
from facteur.settings import load_settings
from tests.support.app import running_app

TOKEN = "api-token-xyz"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

PLAN_JSON: dict[str, Any] = {
    "tasks": [
        {"key": "a", "title": "A", "description": "do a", "acceptance_criteria": ["a works"]},
        {"key": "b", "title": "B", "description": "do b", "acceptance_criteria": ["b works"], "heavy": True},
        {
            "key": "c",
            "title": "C",
            "description": "do c",
            "depends_on": ["a", "b"],
            "acceptance_criteria": ["c works"],
            "paths": ["src/c.py"],
        },
    ]
}


def settings_for(url: str, **env: str) -> Any:
    return load_settings(
        environ={
            "FACTEUR_DATABASE__URL": url,
            "FACTEUR_EXECUTOR__KIND": "none",
            "FACTEUR_BUS__OUTBOX__RELAY_ENABLED": "false",
            "FACTEUR_SERVER__API_TOKEN": TOKEN,
            **env,
        }
    )


def spec(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Faster widgets",
        "goal": "Halve the p99 of the widget API",
        "repository": "acme/widgets",
        "constraints": "No new services",
        "success_metrics": ["p99 < 120 ms"],
        "priority": 1,
        "risk_labels": [],
        "budget": {"tokens": 2_000_000, "usd": 40},
    }
    body.update(changes)
    return body


async def test_an_idea_with_a_plan_skips_planning_and_gets_its_tasks(database_url: str) -> None:
    # the scheduler is off: the idea stays as submission left it
    async with running_app(settings_for(database_url, FACTEUR_SCHEDULER__ENABLED="false")) as running:
        client = running.client
        response = await client.post(
            "/api/v1/ideas", json=spec(plan=render_plan(plan_from_json(PLAN_JSON))), headers=AUTH
        )
        assert response.status_code == 201, response.text
        idea = response.json()
        for name in ("id", "state", "paused", "repository", "plan", "tasks", "runs", "approvals", "cost"):
            assert name in idea
        assert (idea["state"], idea["paused"], idea["repository"]) == (
            "awaiting_dependencies",
            False,
            "acme/widgets",
        )
        assert idea["plan"]["version"] == 1 and idea["plan"]["approved"] is True
        tasks = {t["key"]: t for t in idea["tasks"]}
        assert tasks["c"]["depends_on"] == ["a", "b"]
        assert (tasks["a"]["state"], tasks["c"]["state"], tasks["b"]["heavy"]) == ("ready", "pending", True)
        assert [a["decision"] for a in idea["approvals"]] == ["automatic"]
        assert idea["cost"] == {"input_tokens": 0, "output_tokens": 0, "usd": 0.0}
        assert idea["spec"]["budget"] == {"tokens": 2_000_000, "usd": 40.0}

        shown = await client.get(f"/api/v1/ideas/{idea['id']}", headers=AUTH)
        assert shown.status_code == 200 and shown.json() == idea
        events = (await client.get(f"/api/v1/ideas/{idea['id']}/events", headers=AUTH)).json()
        kinds = [e["kind"] for e in events["items"]]
        assert kinds == [
            "idea.registered",
            "plan.received",
            "idea.transition",
            "approval.automatic",
            "idea.transition",
        ]
        assert events["items"][2]["payload"]["skipped"] == ["planning"]
        assert events["items"][4]["payload"]["skipped"] == ["awaiting_approval"]
        assert verify_chain(await running.runtime.store.list_events()) is None
        intent = [
            e for e in await running.runtime.store.pending_outbox(10) if e.message.topic == "codex.intent"
        ]
        assert len(intent) == 1


async def test_high_risk_or_configured_approval_makes_the_plan_wait(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url)
    async with running_app(settings) as running:
        risky = await running.client.post(
            "/api/v1/ideas", json=spec(plan_json=PLAN_JSON, risk_labels=["Database-Migration"]), headers=AUTH
        )
        body = risky.json()
        assert (body["state"], body["tasks"], body["plan"]["approved"]) == ("awaiting_approval", [], False)
        events = (await running.client.get(f"/api/v1/ideas/{body['id']}/events", headers=AUTH)).json()
        requested = [e for e in events["items"] if e["kind"] == "approval.requested"]
        assert requested[0]["payload"]["reason"] == "high-risk label(s): database-migration"

    gated = settings_for(sqlite_url, FACTEUR_APPROVALS__REQUIRED="true")
    async with running_app(gated) as running:
        response = await running.client.post("/api/v1/ideas", json=spec(plan_json=PLAN_JSON), headers=AUTH)
        assert response.json()["state"] == "awaiting_approval"
        plain = await running.client.post("/api/v1/ideas", json=spec(), headers=AUTH)
        # no plan: a planning run is created and submitted at once
        assert (plain.json()["state"], plain.json()["plan"]) == ("planning", None)
        [planning] = plain.json()["runs"]
        assert (planning["stage"], planning["status"]) == ("planning", "submitted")


async def test_idempotency_key_listing_and_pages(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url)) as running:
        client = running.client
        key = {**AUTH, "Idempotency-Key": "submit-42"}
        first = await client.post("/api/v1/ideas", json=spec(), headers=key)
        again = await client.post("/api/v1/ideas", json=spec(title="changed"), headers=key)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"] and again.json()["title"] == "Faster widgets"

        for n in range(4):
            repo = "acme/gadgets" if n % 2 else "acme/widgets"
            await client.post("/api/v1/ideas", json=spec(title=f"idea {n}", repository=repo), headers=AUTH)
        page = (await client.get("/api/v1/ideas?limit=2", headers=AUTH)).json()
        assert [i["title"] for i in page["items"]] == ["idea 3", "idea 2"]
        rest = (await client.get(f"/api/v1/ideas?limit=10&cursor={page['next_cursor']}", headers=AUTH)).json()
        assert [i["title"] for i in rest["items"]] == ["idea 1", "idea 0", "Faster widgets"]
        assert rest["next_cursor"] is None
        gadgets = (await client.get("/api/v1/ideas?repository=acme/gadgets", headers=AUTH)).json()
        assert {i["title"] for i in gadgets["items"]} == {"idea 1", "idea 3"}
        registered = (await client.get("/api/v1/ideas?state=registered&state=planning", headers=AUTH)).json()
        assert len(registered["items"]) == 5


async def test_bad_requests_get_4xx_naming_the_problem(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url)) as running:
        client = running.client
        assert (await client.get("/api/v1/ideas")).status_code == 401
        assert (
            await client.get("/api/v1/ideas", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        missing = await client.get(f"/api/v1/ideas/{uuid.uuid4()}", headers=AUTH)
        assert missing.status_code == 404
        assert (await client.get("/api/v1/ideas/not-a-uuid", headers=AUTH)).status_code == 400
        bad_repo = await client.post("/api/v1/ideas", json=spec(repository="widgets"), headers=AUTH)
        assert bad_repo.status_code == 400 and "repository" in bad_repo.json()["detail"]
        unknown = await client.post("/api/v1/ideas", json=spec(colour="red"), headers=AUTH)
        assert unknown.status_code == 400 and "colour" in unknown.json()["detail"]
        cyclic = {"tasks": [{**t, "depends_on": ["c"]} if t["key"] == "a" else t for t in PLAN_JSON["tasks"]]}
        rejected = await client.post("/api/v1/ideas", json=spec(plan_json=cyclic), headers=AUTH)
        assert rejected.status_code == 400
        assert rejected.json()["error"] == "invalid plan"
        assert any("cycle" in p for p in rejected.json()["problems"])
        both = await client.post("/api/v1/ideas", json=spec(plan="x", plan_json=PLAN_JSON), headers=AUTH)
        assert both.status_code == 400
        cursor = await client.get("/api/v1/ideas?cursor=%%%", headers=AUTH)
        assert cursor.status_code == 400
        assert (await client.get("/api/v1/ideas?limit=0", headers=AUTH)).status_code == 400
        assert (await running.runtime.store.list_events()) == []
