"""The orchestrator end to end, through the HTTP API only (issue #5 §7).

`facteur serve` runs as its own process with the local executor and at most one run at a time. Each run's
workflow is a stand-in agent process that waits to be told how to end; the test plays the stage runner:
it posts the run's callbacks (``started``, ``completed``) and then lets the process exit. It checks that
A and B run one at a time, C only after both, that pause holds C back and resume releases it, that the
idea reaches the end of its pipeline, that cancel stops a run in flight (its process is gone) and ends
the idea ``cancelled``, and that a failing task is retried after its back-off and then fails its idea.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from facteur.executors.processes import alive
from tests.acceptance.test_canary import serve
from tests.support.services import free_port

pytestmark = pytest.mark.acceptance

TOKEN = "orchestrator-acceptance"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BACKOFF_SECONDS = 1.0
T = TypeVar("T")

#: the stand-in agent: records its pid, then waits for ``<run>.done`` and exits with the code it holds
AGENT = """\
import json, os, pathlib, sys, time
event = json.loads(pathlib.Path(sys.argv[1]).read_text())
run = event["facteur"]["runId"]
box = pathlib.Path(sys.argv[2])
(box / f"{run}.pid").write_text(str(os.getpid()))
done = box / f"{run}.done"
while not done.exists():
    time.sleep(0.05)
sys.exit(int(done.read_text() or "0"))
"""


def plan(*tasks: tuple[str, list[str]]) -> dict[str, Any]:
    return {
        "tasks": [
            {"key": key, "title": f"Task {key}", "depends_on": deps, "acceptance_criteria": [f"{key} works"]}
            for key, deps in tasks
        ]
    }


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class Api:
    def __init__(self, port: int, box: Path) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10)
        self.box = box

    def submit(self, title: str, document: dict[str, Any]) -> dict[str, Any]:
        body = {"title": title, "goal": "done", "repository": "acme/widgets", "plan_json": document}
        response = self.client.post("/api/v1/ideas", json=body)
        assert response.status_code == 201, response.text
        idea: dict[str, Any] = response.json()
        return idea

    def idea(self, idea_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/ideas/{idea_id}")
        assert response.status_code == 200, response.text
        idea: dict[str, Any] = response.json()
        return idea

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(path, json=body or {})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def live_runs(self, idea: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in idea["runs"] if r["status"] in {"queued", "submitted", "running"}]

    def next_run(self, idea_id: str, seen: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait for a new run to be dispatched and its agent to start; the idea as it was then."""

        def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
            idea = self.idea(idea_id)
            fresh = [r for r in idea["runs"] if r["id"] not in seen]
            if fresh and (self.box / f"{fresh[0]['id']}.pid").exists():
                return fresh[0], idea
            return None

        run, idea = wait_for(f"a new run of idea {idea_id}", probe)
        seen.add(run["id"])
        return run, idea

    def report(self, run_id: str, event_id: str, kind: str, **fields: Any) -> None:
        response = self.client.post(
            f"/api/v1/runs/{run_id}/events", json={"id": event_id, "type": kind, **fields}
        )
        assert response.status_code == 202, response.text

    def finish(self, run_id: str, outcome: str) -> None:
        """As a stage runner: started, completed; then the agent process exits accordingly."""
        self.report(run_id, "e-start", "started")
        self.report(run_id, "e-end", "completed", outcome=outcome, summary=f"{outcome} by the test")
        (self.box / f"{run_id}.done").write_text("0" if outcome == "succeeded" else "1")


def key_of(idea: dict[str, Any], run: dict[str, Any]) -> str:
    key: str = next(t["key"] for t in idea["tasks"] if t["id"] == run["task_id"])
    return key


def states(idea: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["state"] for t in idea["tasks"]}


def test_ideas_run_their_dag_under_the_limits_and_obey_people(tmp_path: Path) -> None:
    box = tmp_path / "agents"
    box.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    port = free_port()
    env = {
        "FACTEUR_SERVER__API_TOKEN": TOKEN,
        "FACTEUR_EXECUTOR__KIND": "local",
        "FACTEUR_EXECUTOR__LOCAL__COMMAND": f"{sys.executable} {agent} {{event_file}} {box}",
        "FACTEUR_SCHEDULER__MAX_CONCURRENT": "1",
        "FACTEUR_SCHEDULER__MAX_ATTEMPTS": "2",
        "FACTEUR_SCHEDULER__RETRY_BACKOFF_SECONDS": str(BACKOFF_SECONDS),
    }
    with serve(tmp_path, port, tmp_path / "serve.log", env):
        api = Api(port, box)
        try:
            run_the_scenario(api)
        finally:
            api.client.close()


def run_the_scenario(api: Api) -> None:
    # --- A and B one at a time, C after both; pause holds C back, resume releases it -------------
    idea = api.submit("Three tasks", plan(("a", []), ("b", []), ("c", ["a", "b"])))
    seen: set[str] = set()
    first, shown = api.next_run(idea["id"], seen)
    assert key_of(shown, first) in {"a", "b"} and len(api.live_runs(shown)) == 1
    assert states(shown)["c"] == "pending"
    api.finish(first["id"], "succeeded")

    second, shown = api.next_run(idea["id"], seen)
    assert {key_of(shown, first), key_of(shown, second)} == {"a", "b"}
    assert len(api.live_runs(shown)) == 1 and states(shown)["c"] == "pending"
    paused = api.post(f"/api/v1/ideas/{idea['id']}/pause", {"reason": "hold on"})
    assert paused["paused"] is True
    api.finish(second["id"], "succeeded")
    wait_for("c ready", lambda: True if states(api.idea(idea["id"]))["c"] == "ready" else None)
    time.sleep(1.0)  # paused: nothing is dispatched, however long one waits
    held = api.idea(idea["id"])
    assert states(held)["c"] == "ready" and len(held["runs"]) == 2

    resumed = api.post(f"/api/v1/ideas/{idea['id']}/resume")
    assert resumed["paused"] is False
    third, shown = api.next_run(idea["id"], seen)
    assert key_of(shown, third) == "c"
    api.finish(third["id"], "succeeded")
    done = wait_for(
        "the idea completed",
        lambda: i if (i := api.idea(idea["id"]))["state"] == "completed" else None,
    )
    assert states(done) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    kinds = [e["kind"] for e in api.client.get(f"/api/v1/ideas/{idea['id']}/events").json()["items"]]
    assert "idea.paused" in kinds and "idea.resumed" in kinds
    transitions = [
        e["payload"]
        for e in api.client.get(f"/api/v1/ideas/{idea['id']}/events").json()["items"]
        if e["kind"] == "idea.transition"
    ]
    assert transitions[-1]["to"] == "completed" and transitions[-1]["trigger"] == "tasks_succeeded"
    assert transitions[-1]["skipped"] == ["qa_review", "integration", "deployment", "monitoring"]

    # --- cancel stops the run in flight ----------------------------------------------------------
    doomed = api.submit("To be cancelled", plan(("x", [])))
    run, _ = api.next_run(doomed["id"], seen)
    pid = int((api.box / f"{run['id']}.pid").read_text())
    cancelled = api.post(f"/api/v1/ideas/{doomed['id']}/cancel", {"reason": "changed my mind"})
    assert cancelled["state"] == "cancelled"
    assert [r["status"] for r in cancelled["runs"]] == ["cancelled"]
    assert states(cancelled) == {"x": "cancelled"}
    wait_for("the agent process to end", lambda: None if alive(pid) else True, timeout=15)
    again = api.client.post(f"/api/v1/ideas/{doomed['id']}/pause")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]

    # --- a failing task is retried after its back-off, then fails its idea ------------------------
    flaky = api.submit("Fails twice", plan(("y", [])))
    run, _ = api.next_run(flaky["id"], seen)
    api.finish(run["id"], "failed")
    failed_at = time.monotonic()
    retried, shown = api.next_run(flaky["id"], seen)
    assert time.monotonic() - failed_at >= BACKOFF_SECONDS * 0.9
    assert retried["attempt"] == 2 and shown["state"] == "running_tasks"
    api.finish(retried["id"], "failed")
    ended = wait_for(
        "the idea failed", lambda: i if (i := api.idea(flaky["id"]))["state"] == "failed" else None
    )
    assert states(ended) == {"y": "failed"}
    assert [r["status"] for r in ended["runs"]] == ["failed", "failed"]
