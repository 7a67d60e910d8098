"""REST API v1, what people do to an idea once it exists: pause, resume, cancel, decide on its plan, send a
new plan version; and to one of its tasks: retry, cancel. Over HTTP against the app in process with its
real store; the scheduler is off and driven by hand (``pass_once``) so every state is the one asked for."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from facteur.domain.plans import plan_from_json, render_plan
from facteur.executors.none import NoneExecutor
from tests.integration.api.test_ideas_api import AUTH, PLAN_JSON, TOKEN, settings_for, spec
from tests.support.app import Running, running_app

#: one task, nothing depending on it
SINGLE: dict[str, Any] = {
    "tasks": [{"key": "x", "title": "X", "description": "do x", "acceptance_criteria": ["x works"]}]
}
#: a then b: b waits for a
CHAIN: dict[str, Any] = {
    "tasks": [
        {"key": "a", "title": "A", "acceptance_criteria": ["a works"]},
        {"key": "b", "title": "B", "depends_on": ["a"], "acceptance_criteria": ["b works"]},
    ]
}

#: every endpoint of the control API (POST), with a body each accepts
ENDPOINTS: list[tuple[str, dict[str, Any]]] = [
    ("/api/v1/ideas/{id}/pause", {}),
    ("/api/v1/ideas/{id}/resume", {}),
    ("/api/v1/ideas/{id}/cancel", {}),
    ("/api/v1/ideas/{id}/approvals", {"decision": "approve"}),
    ("/api/v1/ideas/{id}/plans", {"plan_json": SINGLE}),
    ("/api/v1/tasks/{id}/retry", {}),
    ("/api/v1/tasks/{id}/cancel", {}),
]


def settings(url: str, **env: str) -> Any:
    """The scheduler off: nothing is dispatched unless a test calls ``pass_once``."""
    return settings_for(url, FACTEUR_SCHEDULER__ENABLED="false", **env)


async def submit(
    running: Running, document: dict[str, Any] | None = PLAN_JSON, **changes: Any
) -> dict[str, Any]:
    body = spec(**changes) if document is None else spec(plan_json=document, **changes)
    response = await running.client.post("/api/v1/ideas", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    idea: dict[str, Any] = response.json()
    return idea


async def post(running: Running, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return await running.client.post(path, json=body, headers=AUTH)


async def ok(
    running: Running, path: str, body: dict[str, Any] | None = None, status: int = 200
) -> dict[str, Any]:
    response = await post(running, path, body)
    assert response.status_code == status, response.text
    idea: dict[str, Any] = response.json()
    return idea


async def shown(running: Running, idea_id: str) -> dict[str, Any]:
    response = await running.client.get(f"/api/v1/ideas/{idea_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    idea: dict[str, Any] = response.json()
    return idea


async def events(running: Running, idea_id: str) -> list[dict[str, Any]]:
    response = await running.client.get(f"/api/v1/ideas/{idea_id}/events?limit=1000", headers=AUTH)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in items]


def tasks_of(idea: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["key"]: t for t in idea["tasks"]}


def task_states(idea: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["state"] for t in idea["tasks"]}


async def report(running: Running, run_id: str, event_id: str, kind: str, **fields: Any) -> None:
    """As a stage runner, with the admin token."""
    response = await running.client.post(
        f"/api/v1/runs/{run_id}/events", json={"id": event_id, "type": kind, **fields}, headers=AUTH
    )
    assert response.status_code == 202, response.text


def assert_error(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert {"error", "detail"} <= set(body), body
    for word in words:
        assert word in str(body["detail"]), body
    return body


# --- pause and resume ---------------------------------------------------------------------------------------


async def test_pause_holds_dispatch_and_resume_releases_it(database_url: str) -> None:
    async with running_app(settings(database_url)) as running:
        idea = await submit(running, SINGLE)
        path = f"/api/v1/ideas/{idea['id']}"

        paused = await ok(running, f"{path}/pause", {"reason": "hold on", "by": "alice"})
        assert (paused["paused"], paused["state"]) == (True, "awaiting_dependencies")
        assert paused == await shown(running, idea["id"])
        [event] = [e for e in await events(running, idea["id"]) if e["kind"] == "idea.paused"]
        assert event["payload"] == {"by": "alice", "reason": "hold on"}
        assert event["actor"] == "alice"

        before = len(await events(running, idea["id"]))
        again = await ok(running, f"{path}/pause")
        assert again["paused"] is True
        after = await events(running, idea["id"])
        assert len(after) == before and kinds(after).count("idea.paused") == 1

        # a paused idea's ready task is not dispatched
        assert (await running.runtime.scheduler.pass_once()).claimed == 0
        assert task_states(await shown(running, idea["id"])) == {"x": "ready"}

        resumed = await ok(running, f"{path}/resume")
        assert resumed["paused"] is False
        resumed_events = [e for e in await events(running, idea["id"]) if e["kind"] == "idea.resumed"]
        assert [e["payload"] for e in resumed_events] == [{"by": "api", "reason": None}]
        assert (await running.runtime.scheduler.pass_once()).claimed == 1
        dispatched = await shown(running, idea["id"])
        assert task_states(dispatched) == {"x": "queued"}
        assert [r["status"] for r in dispatched["runs"]] == ["submitted"]

        # resuming an idea that is not paused changes nothing
        count = len(await events(running, idea["id"]))
        assert (await ok(running, f"{path}/resume"))["paused"] is False
        assert len(await events(running, idea["id"])) == count


async def test_unknown_ids_bad_ids_and_bad_bodies_are_4xx(sqlite_url: str) -> None:
    async with running_app(settings(sqlite_url)) as running:
        missing = uuid.uuid4()
        for template, body in ENDPOINTS:
            response = await post(running, template.format(id=missing), body)
            assert_error(response, 404, str(missing))
            assert response.json()["error"] == "not found"
            malformed = await post(running, template.format(id="not-a-uuid"), body)
            assert malformed.status_code == 400, (template, malformed.text)
            assert malformed.json()["error"] == "invalid request"

        idea = await submit(running, SINGLE)
        path = f"/api/v1/ideas/{idea['id']}"
        unknown = await post(running, f"{path}/pause", {"reason": "x", "colour": "red"})
        assert_error(unknown, 400, "colour")
        for verb in ("resume", "cancel"):
            assert_error(await post(running, f"{path}/{verb}", {"colour": "red"}), 400, "colour")
        assert_error(await post(running, f"{path}/approvals", {"decision": "approve", "x": 1}), 400, "x")
        assert_error(await post(running, f"{path}/plans", {"plan_json": SINGLE, "extra": 1}), 400, "extra")
        assert_error(await post(running, f"{path}/pause", {"by": ""}), 400, "by")
        assert_error(await post(running, f"{path}/pause", {"reason": "r" * 2001}), 400, "reason")
        not_json = await running.client.post(
            f"{path}/pause", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
        )
        assert not_json.status_code == 400, not_json.text
        task_id = idea["tasks"][0]["id"]
        assert_error(await post(running, f"/api/v1/tasks/{task_id}/cancel", {"nope": True}), 400, "nope")
        assert_error(await post(running, f"/api/v1/tasks/{task_id}/retry", {"nope": True}), 400, "nope")

        # nothing of the above changed the idea or recorded anything
        assert await shown(running, idea["id"]) == idea
        assert "idea.paused" not in kinds(await events(running, idea["id"]))


# --- cancel -------------------------------------------------------------------------------------------------


async def test_cancel_stops_the_runs_in_flight_through_the_executor(database_url: str) -> None:
    executor = NoneExecutor()
    async with running_app(settings(database_url), executor=executor) as running:
        idea = await submit(running, CHAIN)
        other = await submit(running, SINGLE, title="bystander")
        await running.runtime.scheduler.pass_once()
        dispatched = await shown(running, idea["id"])
        [run] = dispatched["runs"]
        assert run["status"] == "submitted" and run["workflow_name"] in executor.submitted
        assert task_states(dispatched) == {"a": "queued", "b": "pending"}
        metrics = (await running.client.get("/metrics")).text
        assert "\nfacteur_tasks_in_flight 2\n" in metrics  # a of this idea and the bystander's task
        assert '\nfacteur_tasks_in_flight_by_repository{repository="acme/widgets"} 2\n' in metrics

        cancelled = await ok(running, f"/api/v1/ideas/{idea['id']}/cancel", {"reason": "changed my mind"})
        assert cancelled["state"] == "cancelled"
        assert [r["status"] for r in cancelled["runs"]] == ["cancelled"]
        assert task_states(cancelled) == {"a": "cancelled", "b": "cancelled"}
        assert run["workflow_name"] in executor.cancelled
        # only this idea's workflow was stopped
        [bystander_run] = (await shown(running, other["id"]))["runs"]
        assert bystander_run["workflow_name"] not in executor.cancelled
        assert bystander_run["status"] == "submitted"
        assert "\nfacteur_tasks_in_flight 1\n" in (await running.client.get("/metrics")).text

        timeline = await events(running, idea["id"])
        [ended] = [
            e for e in timeline if e["kind"] == "idea.transition" and e["payload"]["to"] == "cancelled"
        ]
        assert ended["payload"]["reason"] == "changed my mind" and ended["actor"] == "api"
        [stopped] = [e for e in timeline if e["kind"] == "run.cancelled"]
        assert stopped["run_id"] == run["id"]

        again = await ok(running, f"/api/v1/ideas/{idea['id']}/cancel")
        assert again == cancelled
        assert len(await events(running, idea["id"])) == len(timeline)
        # a cancelled idea cannot be paused, nor its tasks retried
        assert_error(await post(running, f"/api/v1/ideas/{idea['id']}/pause"), 409, "cancelled")
        task_a = tasks_of(cancelled)["a"]["id"]
        assert_error(await post(running, f"/api/v1/tasks/{task_a}/retry"), 409, "cancelled")


async def test_concurrent_requests_record_one_change(database_url: str) -> None:
    executor = NoneExecutor()
    async with running_app(settings(database_url), executor=executor) as running:
        idea = await submit(running, SINGLE)
        path = f"/api/v1/ideas/{idea['id']}"
        pauses = await asyncio.gather(*(post(running, f"{path}/pause") for _ in range(5)))
        assert [r.status_code for r in pauses] == [200] * 5
        assert kinds(await events(running, idea["id"])).count("idea.paused") == 1

        await ok(running, f"{path}/resume")
        await running.runtime.scheduler.pass_once()
        cancels = await asyncio.gather(*(post(running, f"{path}/cancel") for _ in range(5)))
        assert [r.status_code for r in cancels] == [200] * 5, [r.text for r in cancels]
        assert {r.json()["state"] for r in cancels} == {"cancelled"}
        timeline = await events(running, idea["id"])
        assert kinds(timeline).count("run.cancelled") == 1
        assert (
            len([e for e in timeline if e["kind"] == "idea.transition" and e["payload"]["to"] == "cancelled"])
            == 1
        )
        assert len(executor.cancelled) == 1


async def test_concurrent_decisions_and_plan_versions_do_not_collide(database_url: str) -> None:
    async with running_app(settings(database_url, FACTEUR_APPROVALS__REQUIRED="true")) as running:
        idea = await submit(running)
        path = f"/api/v1/ideas/{idea['id']}"
        added = await asyncio.gather(
            *(post(running, f"{path}/plans", {"plan_json": SINGLE}) for _ in range(4))
        )
        assert [r.status_code for r in added] == [201] * 4, [r.text for r in added]
        assert (await shown(running, idea["id"]))["plan_versions"] == [1, 2, 3, 4, 5]

        decisions = await asyncio.gather(
            post(running, f"{path}/approvals", {"decision": "approve"}),
            post(running, f"{path}/approvals", {"decision": "reject"}),
        )
        assert sorted(r.status_code for r in decisions) == [200, 409], [r.text for r in decisions]
        final = await shown(running, idea["id"])
        assert len(final["approvals"]) == 1
        assert final["state"] == (
            "cancelled" if final["approvals"][0]["decision"] == "rejected" else "awaiting_dependencies"
        )


async def test_cancelling_an_idea_still_planning_stops_its_planning_run(sqlite_url: str) -> None:
    executor = NoneExecutor()
    async with running_app(settings(sqlite_url), executor=executor) as running:
        idea = await submit(running, None)
        [planning] = idea["runs"]
        assert (idea["state"], planning["stage"], planning["status"]) == ("planning", "planning", "submitted")
        cancelled = await ok(running, f"/api/v1/ideas/{idea['id']}/cancel")
        assert cancelled["state"] == "cancelled"
        assert [r["status"] for r in cancelled["runs"]] == ["cancelled"]
        assert task_states(cancelled) == {"planning": "cancelled"}
        assert executor.cancelled == {planning["workflow_name"]}
        # a plan arriving afterwards is kept on record, not applied
        late = await ok(running, f"/api/v1/ideas/{idea['id']}/plans", {"plan_json": SINGLE}, status=201)
        assert (late["state"], late["plan_versions"], late["plan"]["approved"]) == ("cancelled", [1], False)
        assert task_states(late) == {"planning": "cancelled"}


async def test_cancelling_a_completed_idea_is_refused_and_recorded(database_url: str) -> None:
    async with running_app(settings(database_url)) as running:
        idea = await submit(running, SINGLE)
        await running.runtime.scheduler.pass_once()
        [run] = (await shown(running, idea["id"]))["runs"]
        await report(running, run["id"], "e1", "started")
        await report(running, run["id"], "e2", "completed", outcome="succeeded", summary="done")
        done = await shown(running, idea["id"])
        assert done["state"] == "completed"

        refused = await post(running, f"/api/v1/ideas/{idea['id']}/cancel", {"reason": "too late"})
        body = assert_error(refused, 409, "completed")
        assert body["error"] == "conflict"
        assert await shown(running, idea["id"]) == done
        [event] = [e for e in await events(running, idea["id"]) if e["kind"] == "transition.refused"]
        assert event["payload"]["machine"] == "idea"
        assert (event["payload"]["from"], event["payload"]["to"]) == ("completed", "cancelled")
        assert event["actor"] == "api"

        for verb in ("pause", "resume"):
            assert_error(await post(running, f"/api/v1/ideas/{idea['id']}/{verb}"), 409, "completed")
        task_id = done["tasks"][0]["id"]
        assert_error(await post(running, f"/api/v1/tasks/{task_id}/cancel"), 409, "succeeded")


# --- approvals ----------------------------------------------------------------------------------------------


async def test_a_person_approves_or_rejects_a_waiting_plan(database_url: str) -> None:
    async with running_app(settings(database_url, FACTEUR_APPROVALS__REQUIRED="true")) as running:
        idea = await submit(running)
        assert (idea["state"], idea["tasks"], idea["plan"]["approved"]) == ("awaiting_approval", [], False)
        path = f"/api/v1/ideas/{idea['id']}/approvals"

        approved = await ok(running, path, {"decision": "approve", "by": "alice", "reason": "looks right"})
        assert approved["state"] == "awaiting_dependencies"
        assert task_states(approved) == {"a": "ready", "b": "ready", "c": "pending"}
        assert tasks_of(approved)["c"]["depends_on"] == ["a", "b"]
        assert approved["plan"]["version"] == 1 and approved["plan"]["approved"] is True
        [approval] = approved["approvals"]
        assert (
            approval["plan_version"],
            approval["decision"],
            approval["decided_by"],
            approval["reason"],
        ) == (
            1,
            "approved",
            "alice",
            "looks right",
        )
        assert "approval.approved" in kinds(await events(running, idea["id"]))

        again = await post(running, path, {"decision": "approve"})
        assert_error(again, 409, "awaiting_dependencies")
        assert len((await shown(running, idea["id"]))["approvals"]) == 1

        other = await submit(running, title="risky")
        rejected = await ok(
            running, f"/api/v1/ideas/{other['id']}/approvals", {"decision": "reject", "reason": "too broad"}
        )
        assert (rejected["state"], rejected["tasks"]) == ("cancelled", [])
        [approval] = rejected["approvals"]
        assert (approval["decision"], approval["decided_by"], approval["reason"]) == (
            "rejected",
            "api",
            "too broad",
        )
        timeline = await events(running, other["id"])
        assert "approval.rejected" in kinds(timeline)
        assert (
            timeline[-1]["payload"]["to"] == "cancelled" and timeline[-1]["payload"]["reason"] == "too broad"
        )
        assert_error(
            await post(running, f"/api/v1/ideas/{other['id']}/approvals", {"decision": "approve"}),
            409,
            "cancelled",
        )


async def test_approval_names_a_plan_version_and_bad_decisions_are_400(sqlite_url: str) -> None:
    async with running_app(settings(sqlite_url, FACTEUR_APPROVALS__REQUIRED="true")) as running:
        idea = await submit(running)
        path = f"/api/v1/ideas/{idea['id']}"
        missing = await post(running, f"{path}/approvals", {"decision": "approve", "plan_version": 7})
        assert_error(missing, 400, "plan version 7")
        for bad in (
            {"decision": "maybe"},
            {},
            {"decision": "approve", "plan_version": 0},
            {"decision": "approve", "plan_version": "two"},
        ):
            assert_error(await post(running, f"{path}/approvals", bad), 400)
        assert (await shown(running, idea["id"]))["state"] == "awaiting_approval"

        # a second version while waiting: the idea now waits for a decision on it; an older one may be chosen
        second = await ok(running, f"{path}/plans", {"plan_json": SINGLE}, status=201)
        assert (second["state"], second["plan_versions"]) == ("awaiting_approval", [1, 2])
        requested = [e for e in await events(running, idea["id"]) if e["kind"] == "approval.requested"]
        assert [e["payload"]["plan_version"] for e in requested] == [1, 2]
        chosen = await ok(running, f"{path}/approvals", {"decision": "approve", "plan_version": 1})
        assert sorted(task_states(chosen)) == ["a", "b", "c"]
        assert chosen["plan"]["version"] == 1 and chosen["approvals"][0]["plan_version"] == 1

        latest = await submit(running, title="latest wins")
        await ok(running, f"/api/v1/ideas/{latest['id']}/plans", {"plan_json": SINGLE}, status=201)
        decided = await ok(running, f"/api/v1/ideas/{latest['id']}/approvals", {"decision": "approve"})
        assert list(task_states(decided)) == ["x"] and decided["plan"]["version"] == 2


# --- plan versions ------------------------------------------------------------------------------------------


async def test_new_plan_versions_as_markdown_or_json(database_url: str) -> None:
    async with running_app(settings(database_url)) as running:
        idea = await submit(running)
        path = f"/api/v1/ideas/{idea['id']}/plans"

        markdown = render_plan(plan_from_json(SINGLE))
        second = await ok(running, path, {"plan": markdown}, status=201)
        assert second["plan_versions"] == [1, 2]
        # an idea past approval keeps the new version on record; its tasks and approved plan stay
        assert second["plan"]["version"] == 1 and second["plan"]["approved"] is True
        assert second["state"] == "awaiting_dependencies" and sorted(task_states(second)) == ["a", "b", "c"]
        not_applied = [e for e in await events(running, idea["id"]) if e["kind"] == "plan.not_applied"]
        assert [e["payload"] for e in not_applied] == [{"plan_version": 2, "state": "awaiting_dependencies"}]

        third = await ok(running, path, {"plan_json": CHAIN}, status=201)
        assert third["plan_versions"] == [1, 2, 3]
        stored = {
            p.version: p for p in (await running.runtime.store.idea_detail(uuid.UUID(idea["id"]))).plans
        }
        assert [t["key"] for t in stored[2].document["tasks"]] == ["x"]
        assert [t["key"] for t in stored[3].document["tasks"]] == ["a", "b"]
        assert stored[2].source == "api"

        for body in ({"plan": markdown, "plan_json": SINGLE}, {}, {"plan": None, "plan_json": None}):
            neither = await post(running, path, body)
            assert_error(neither, 400, "one of them")
        assert (await shown(running, idea["id"]))["plan_versions"] == [1, 2, 3]


async def test_an_invalid_plan_is_400_listing_every_problem(sqlite_url: str) -> None:
    async with running_app(settings(sqlite_url)) as running:
        idea = await submit(running)
        path = f"/api/v1/ideas/{idea['id']}/plans"

        cyclic = {"tasks": [{**t, "depends_on": ["c"]} if t["key"] == "a" else t for t in PLAN_JSON["tasks"]]}
        response = await post(running, path, {"plan_json": cyclic})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "invalid plan"
        assert any("cycle" in p for p in body["problems"]), body

        uncriteria = {
            "tasks": [
                {"key": "a", "title": "A"},
                {"key": "b", "title": "B", "depends_on": ["a", "ghost"], "acceptance_criteria": ["b"]},
            ]
        }
        response = await post(running, path, {"plan_json": uncriteria})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "invalid plan" and len(body["problems"]) >= 2, body
        assert any("acceptance" in p for p in body["problems"]), body
        assert any("ghost" in p for p in body["problems"]), body
        assert body["detail"] == "; ".join(body["problems"])

        markdown = await post(running, path, {"plan": "# not a plan\n\nno tasks here\n"})
        assert markdown.status_code == 400, markdown.text
        assert markdown.json()["problems"], markdown.json()

        after = await shown(running, idea["id"])
        assert after["plan_versions"] == [1]
        assert "plan.received" not in kinds(await events(running, idea["id"]))[2:]


async def test_a_plan_moves_an_idea_still_planning_through_the_gate(sqlite_url: str) -> None:
    async with running_app(settings(sqlite_url)) as running:
        idea = await submit(running, None)
        assert (idea["state"], idea["plan"]) == ("planning", None)
        planned = await ok(running, f"/api/v1/ideas/{idea['id']}/plans", {"plan_json": CHAIN}, status=201)
        assert planned["state"] == "awaiting_dependencies"
        assert planned["plan_versions"] == [1] and planned["plan"]["approved"] is True
        assert {k: v for k, v in task_states(planned).items() if k != "planning"} == {
            "a": "ready",
            "b": "pending",
        }
        assert [a["decision"] for a in planned["approvals"]] == ["automatic"]
        transitions = [
            e["payload"] for e in await events(running, idea["id"]) if e["kind"] == "idea.transition"
        ]
        assert [(t["from"], t["to"]) for t in transitions][-2:] == [
            ("planning", "plan_ready"),
            ("plan_ready", "awaiting_dependencies"),
        ]

    async with running_app(settings(sqlite_url, FACTEUR_APPROVALS__REQUIRED="true")) as running:
        idea = await submit(running, None, title="gated")
        markdown = render_plan(plan_from_json(SINGLE))
        waiting = await ok(running, f"/api/v1/ideas/{idea['id']}/plans", {"plan": markdown}, status=201)
        assert (waiting["state"], waiting["plan"]["approved"]) == ("awaiting_approval", False)
        approved = await ok(running, f"/api/v1/ideas/{idea['id']}/approvals", {"decision": "approve"})
        assert task_states(approved)["x"] == "ready"


# --- tasks --------------------------------------------------------------------------------------------------


async def test_task_retry_and_cancel_refuse_what_the_state_does_not_allow(database_url: str) -> None:
    executor = NoneExecutor()
    async with running_app(settings(database_url), executor=executor) as running:
        idea = await submit(running)
        tasks = tasks_of(idea)
        await running.runtime.scheduler.pass_once()
        dispatched = await shown(running, idea["id"])
        assert task_states(dispatched) == {"a": "queued", "b": "queued", "c": "pending"}
        [run_a] = [r for r in dispatched["runs"] if r["task_id"] == tasks["a"]["id"]]
        [run_b] = [r for r in dispatched["runs"] if r["task_id"] == tasks["b"]["id"]]

        refused = await post(running, f"/api/v1/tasks/{tasks['a']['id']}/retry")
        body = assert_error(refused, 409, "task a is queued", "only a failed or blocked task")
        assert body["error"] == "conflict"

        cancelled = await ok(running, f"/api/v1/tasks/{tasks['a']['id']}/cancel", {"reason": "not needed"})
        assert cancelled["id"] == idea["id"]
        assert task_states(cancelled) == {"a": "cancelled", "b": "queued", "c": "blocked"}
        assert cancelled["state"] == "running_tasks"
        # a's run was stopped through the executor; b's runs on
        runs = {r["id"]: r["status"] for r in cancelled["runs"]}
        assert runs == {run_a["id"]: "cancelled", run_b["id"]: "submitted"}
        assert executor.cancelled == {run_a["workflow_name"]}
        timeline = await events(running, idea["id"])
        [blocked] = [
            e for e in timeline if e["kind"] == "task.transition" and e["payload"]["to"] == "blocked"
        ]
        assert blocked["task_id"] == tasks["c"]["id"]
        assert blocked["payload"]["reason"] == "depends on cancelled task a"
        [ended] = [
            e for e in timeline if e["kind"] == "task.transition" and e["payload"]["to"] == "cancelled"
        ]
        assert ended["task_id"] == tasks["a"]["id"] and ended["actor"] == "api"
        assert (ended["payload"]["by"], ended["payload"]["reason"]) == ("api", "not needed")

        assert_error(
            await post(running, f"/api/v1/tasks/{tasks['a']['id']}/cancel"), 409, "task a is cancelled"
        )
        # c, blocked by a cancelled dependency, can never run: a retry is refused and says so
        assert_error(
            await post(running, f"/api/v1/tasks/{tasks['c']['id']}/retry"),
            409,
            "task c depends on cancelled task(s) a",
        )


async def test_cancelling_the_last_open_task_moves_the_idea_on(database_url: str) -> None:
    two = {
        "tasks": [
            {"key": "x", "title": "X", "acceptance_criteria": ["x works"]},
            {"key": "y", "title": "Y", "acceptance_criteria": ["y works"]},
        ]
    }
    async with running_app(settings(database_url)) as running:
        idea = await submit(running, two)
        await running.runtime.scheduler.pass_once()
        dispatched = await shown(running, idea["id"])
        runs = {r["task_id"]: r["id"] for r in dispatched["runs"]}
        x, y = tasks_of(dispatched)["x"]["id"], tasks_of(dispatched)["y"]["id"]
        await report(running, runs[x], "s", "started")
        await report(running, runs[x], "d", "completed", outcome="succeeded")
        assert (await shown(running, idea["id"]))["state"] == "running_tasks"

        done = await ok(running, f"/api/v1/tasks/{y}/cancel")
        assert task_states(done) == {"x": "succeeded", "y": "cancelled"}
        assert done["state"] == "completed"


async def test_a_retry_records_its_reason(sqlite_url: str) -> None:
    """docs/api.md: the optional body ``{reason, by}`` of every call is written into the audit event."""
    env = {"FACTEUR_SCHEDULER__MAX_ATTEMPTS": "1", "FACTEUR_SCHEDULER__ON_EXHAUSTED": "block"}
    async with running_app(settings(sqlite_url, **env)) as running:
        idea = await submit(running, SINGLE)
        await running.runtime.scheduler.pass_once()
        [run] = (await shown(running, idea["id"]))["runs"]
        await report(running, run["id"], "f", "completed", outcome="failed")
        task = idea["tasks"][0]["id"]
        retried = await ok(running, f"/api/v1/tasks/{task}/retry", {"reason": "flaky network", "by": "bob"})
        assert task_states(retried) == {"x": "ready"}
        [event] = [
            e
            for e in await events(running, idea["id"])
            if e["kind"] == "task.transition" and e["payload"]["trigger"] == "unblocked"
        ]
        assert event["payload"]["by"] == "bob"
        assert event["payload"].get("reason") == "flaky network", event["payload"]


async def test_an_exhausted_task_blocks_and_a_retry_makes_it_ready(database_url: str) -> None:
    env = {"FACTEUR_SCHEDULER__MAX_ATTEMPTS": "1", "FACTEUR_SCHEDULER__ON_EXHAUSTED": "block"}
    executor = NoneExecutor()
    async with running_app(settings(database_url, **env), executor=executor) as running:
        idea = await submit(running, CHAIN)
        await running.runtime.scheduler.pass_once()
        [run] = (await shown(running, idea["id"]))["runs"]
        await report(running, run["id"], "s1", "started")
        await report(running, run["id"], "f1", "completed", outcome="failed", summary="tests fail")

        stalled = await shown(running, idea["id"])
        assert stalled["state"] in {"awaiting_dependencies", "running_tasks"}
        assert task_states(stalled) == {"a": "blocked", "b": "pending"}
        assert tasks_of(stalled)["a"]["attempts"] == 1
        assert "idea.stalled" in kinds(await events(running, idea["id"]))

        task_a = tasks_of(stalled)["a"]["id"]
        retried = await ok(running, f"/api/v1/tasks/{task_a}/retry", {"by": "alice"})
        assert (tasks_of(retried)["a"]["state"], tasks_of(retried)["a"]["attempts"]) == ("ready", 0)
        [unblocked] = [
            e
            for e in await events(running, idea["id"])
            if e["kind"] == "task.transition" and e["payload"]["trigger"] == "unblocked"
        ]
        assert unblocked["actor"] == "alice" and unblocked["payload"]["by"] == "alice"

        # dispatched again with a fresh attempt
        assert (await running.runtime.scheduler.pass_once()).claimed == 1
        again = await shown(running, idea["id"])
        assert [r["status"] for r in again["runs"]] == ["failed", "submitted"]
        assert len(executor.submitted) == 2
        assert_error(await post(running, f"/api/v1/tasks/{task_a}/retry"), 409, "task a is queued")


# --- authentication and description -------------------------------------------------------------------------


async def test_every_endpoint_needs_the_token(sqlite_url: str) -> None:
    async with running_app(settings(sqlite_url)) as running:
        idea = await submit(running)
        task_id = idea["tasks"][0]["id"]
        for template, body in ENDPOINTS:
            path = template.format(id=task_id if "/tasks/" in template else idea["id"])
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = await running.client.post(path, json=body, headers=headers)
                assert_error(response, 401)
                assert response.json()["error"] == "unauthorized"
            # even a body it would refuse is answered 401 first
            assert (await running.client.post(path, json={"colour": "red"})).status_code == 401
        assert await shown(running, idea["id"]) == idea
        assert kinds(await events(running, idea["id"]))[-1] == "idea.transition"


async def test_openapi_describes_every_control_endpoint(sqlite_url: str) -> None:
    async with running_app(settings(sqlite_url)) as running:
        response = await running.client.get("/openapi.json")
        assert response.status_code == 200
        document = response.json()
        paths = document["paths"]
        for template, _body in ENDPOINTS:
            name = "{task_id}" if "/tasks/" in template else "{idea_id}"
            path = template.replace("{id}", name)
            assert path in paths, sorted(paths)
            operation = paths[path]["post"]
            assert "control" in operation["tags"]
            assert any(p["name"] == name.strip("{}") for p in operation["parameters"])
        approvals = paths["/api/v1/ideas/{idea_id}/approvals"]["post"]
        assert approvals["requestBody"]["required"] is True
        assert "201" in paths["/api/v1/ideas/{idea_id}/plans"]["post"]["responses"]
        schemas = document["components"]["schemas"]
        assert schemas["ApprovalIn"]["properties"]["decision"]["enum"] == ["approve", "reject"]
