"""The seeds' path end to end: POST /codex/tasks → a Workflow in (fake) Kubernetes, wired from settings."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import yaml
from kmock import KubernetesEmulator, ResourceInfo

from facteur.domain.runs import RunStatus
from facteur.settings import load_settings
from tests.support.app import running_app
from tests.support.argo_schema import validate_workflow
from tests.support.fakes import FakeClock, SequentialIds
from tests.support.services import shared_path

pytestmark = pytest.mark.kube

WORKFLOWS = "argoproj.io/v1alpha1/workflows"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "facteur", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "facteur"}}],
                "current-context": "fake",
            }
        )
    )
    return path


async def test_canary_creates_a_valid_planning_workflow(
    kmock: KubernetesEmulator, tmp_path: Path, clock: FakeClock, ids: SequentialIds
) -> None:
    kmock.resources[WORKFLOWS] = ResourceInfo(namespaced=True, kind="Workflow", singular="workflow")
    config = kubeconfig(tmp_path / "kubeconfig", str(kmock.servers[0].url).rstrip("/"))
    settings = load_settings(
        environ={
            "FACTEUR_DATABASE__URL": f"sqlite:///{tmp_path / 'f.db'}",
            "FACTEUR_EXECUTOR__KIND": "argo",
            "FACTEUR_ARGO__KUBECONFIG": str(config),
            "FACTEUR_ARGO__SERVICE_ACCOUNT": "argo-workflows-workflow",
        }
    )
    payload = base64.b64decode(shared_path("fixtures", "codex-task", "dry-run-0001.b64").read_text())
    async with running_app(settings, clock=clock, ids=ids) as running:
        first = await running.client.post(
            "/codex/tasks", content=payload, headers={"Content-Type": "application/x-protobuf"}
        )
        again = await running.client.post("/codex/tasks", content=payload)
        body = first.json()
        run = await running.runtime.store.get_run(uuid.UUID(body["runId"]))

    assert first.status_code == 202
    assert body["namespace"] == "argo-workflows"
    assert body["workflowName"].startswith("codex-planning-")
    assert again.json() == {**body, "duplicate": True}
    assert run.status is RunStatus.SUBMITTED

    stored = [key for key in kmock.objects if key[0] == WORKFLOWS]
    assert len(stored) == 1
    workflow = kmock.objects[WORKFLOWS, "argo-workflows", body["workflowName"]].raw
    validate_workflow(workflow)
    assert workflow["spec"]["workflowTemplateRef"] == {"name": "github-codex-planning"}
    assert workflow["spec"]["serviceAccountName"] == "argo-workflows-workflow"
    assert workflow["metadata"]["labels"] == {
        "codex.stage": "planning",
        "codex.idea": body["ideaId"],
        "codex.task": body["taskId"],
        "codex.run": body["runId"],
    }
    assert workflow["metadata"]["annotations"]["codex.repository"] == "proompteng/lab"
    assert workflow["metadata"]["annotations"]["codex.issue_number"] == "999"
    parameters = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert base64.b64decode(parameters["rawEvent"]) == payload
    event = json.loads(base64.b64decode(parameters["eventBody"]))
    assert (event["stage"], event["prompt"], event["issueNumber"]) == ("planning", "Dry run dispatch", 999)
    assert event["facteur"]["runId"] == body["runId"]
