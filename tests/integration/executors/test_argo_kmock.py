"""ArgoExecutor against kmock's Kubernetes emulator over HTTP, through a real kubernetes_asyncio client.

The emulator stores objects as plain JSON and validates nothing: every Workflow it receives is checked with
:func:`tests.support.argo_schema.validate_workflow` here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock import KubernetesEmulator, Request, ResourceInfo
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.incluster_config import SERVICE_TOKEN_FILENAME

from facteur.domain.runs import workflow_name
from facteur.domain.stages import Stage
from facteur.errors import ConfigError, ExecutorError, ExecutorUnavailable
from facteur.executors.argo import ArgoExecutor, create_api_client
from facteur.executors.port import Submission, WorkflowPhase, WorkflowRef, WorkflowRequest
from facteur.settings import ArgoSettings
from tests.support.argo_schema import validate_workflow
from tests.support.services import free_port

pytestmark = pytest.mark.kube

NAMESPACE = "argo-test"
WORKFLOWS = "argoproj.io/v1alpha1/workflows"
TEMPLATES = "argoproj.io/v1alpha1/workflowtemplates"
SETTINGS = ArgoSettings(
    namespace=NAMESPACE,
    service_account="argo-workflows-workflow",
    parameters={"model": "gpt-5-codex"},
    request_timeout_seconds=5,
)
CREATED_AT = datetime(2026, 11, 21, 13, 46, 0, tzinfo=UTC)


def _request(run_id: uuid.UUID | None = None, *, name: str | None = None) -> WorkflowRequest:
    run_id = run_id or uuid.uuid4()
    event = {"stage": "planning", "prompt": "Plan {{workflow.name}}", "repository": "proompteng/lab"}
    return WorkflowRequest(
        run_id=run_id,
        idea_id=uuid.UUID(int=1),
        task_id=uuid.UUID(int=2),
        stage=Stage.PLANNING,
        name=name or workflow_name(Stage.PLANNING, run_id, CREATED_AT),
        created_at=CREATED_AT,
        event_body=json.dumps(event).encode(),
        raw_event=json.dumps({"body": event}).encode(),
        repository="proompteng/lab",
        issue_number=1636,
    )


def _ref(name: str) -> WorkflowRef:
    return WorkflowRef("argo", NAMESPACE, name)


@pytest.fixture
def emulator(kmock: KubernetesEmulator) -> KubernetesEmulator:
    """kmock's plugin fixture (a KubernetesEmulator served over HTTP) with Argo's resources declared."""
    kmock.resources[WORKFLOWS] = ResourceInfo(
        namespaced=True, kind="Workflow", singular="workflow", shortnames={"wf"}
    )
    kmock.resources[TEMPLATES] = ResourceInfo(
        namespaced=True, kind="WorkflowTemplate", singular="workflowtemplate", shortnames={"wftmpl"}
    )
    return kmock


def _url(emulator: KubernetesEmulator) -> str:
    return str(emulator.servers[0].url).rstrip("/")


@pytest.fixture
async def executor(emulator: KubernetesEmulator) -> AsyncIterator[ArgoExecutor]:
    argo = ArgoExecutor(SETTINGS, ApiClient(Configuration(host=_url(emulator))))
    try:
        yield argo
    finally:
        await argo.aclose()


def _stored(emulator: KubernetesEmulator, name: str) -> dict[str, Any]:
    return emulator.objects[WORKFLOWS, NAMESPACE, name].raw


def _store(emulator: KubernetesEmulator, manifest: dict[str, Any]) -> None:
    """Put a workflow in the emulator directly, as if someone else had created it."""
    emulator.objects[WORKFLOWS, NAMESPACE, manifest["metadata"]["name"]] = manifest


def _requests(emulator: KubernetesEmulator, method: str) -> list[Request]:
    return [request for request in emulator if request.method == method]


# --- submit -----------------------------------------------------------------------------------------------


async def test_submit_creates_the_workflow(
    executor: ArgoExecutor, emulator: KubernetesEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    request = _request()

    with caplog.at_level(logging.INFO, logger="facteur.executors.argo"):
        submission = await executor.submit(request)

    assert submission == Submission(_ref(request.name), created=True)
    stored = _stored(emulator, request.name)
    validate_workflow(stored)
    assert stored == executor.build_workflow(request)
    assert stored["metadata"]["labels"]["codex.run"] == str(request.run_id)
    [post] = _requests(emulator, "POST")
    assert post.url.path == f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows"
    assert f"workflow created: name={request.name} namespace={NAMESPACE} run={request.run_id}" in caplog.text


async def test_submitting_the_same_run_again_meets_the_first_workflow(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    request = _request()
    first = await executor.submit(request)

    again = await executor.submit(request)

    assert first.created
    assert again == Submission(_ref(request.name), created=False)
    assert len(emulator.objects) == 1
    # created once, never written again
    assert len(emulator.objects[WORKFLOWS, NAMESPACE, request.name].history) == 1
    assert len(_requests(emulator, "POST")) == 2


async def test_a_name_taken_by_another_run_is_an_error(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    first = _request()
    await executor.submit(first)
    other = _request(uuid.uuid4(), name=first.name)

    with pytest.raises(ExecutorError, match="is taken by another run") as caught:
        await executor.submit(other)

    assert not isinstance(caught.value, ExecutorUnavailable)
    assert str(first.run_id) in str(caught.value)
    assert _stored(emulator, first.name)["metadata"]["labels"]["codex.run"] == str(first.run_id)


async def test_a_name_taken_by_a_foreign_workflow_is_an_error(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    request = _request()
    _store(emulator, {"metadata": {"name": request.name, "namespace": NAMESPACE}, "spec": {}})

    with pytest.raises(ExecutorError, match=r"is taken by another run \(codex\.run=<none>\)"):
        await executor.submit(request)


# --- status -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (None, WorkflowPhase.PENDING),
        ({}, WorkflowPhase.PENDING),
        ({"phase": ""}, WorkflowPhase.PENDING),
        ({"phase": "Pending"}, WorkflowPhase.PENDING),
        ({"phase": "Running"}, WorkflowPhase.RUNNING),
        ({"phase": "Succeeded"}, WorkflowPhase.SUCCEEDED),
        ({"phase": "Failed"}, WorkflowPhase.FAILED),
        ({"phase": "Error"}, WorkflowPhase.FAILED),
        # a phase this version does not know: still waiting, as far as Facteur can tell
        ({"phase": "Paused"}, WorkflowPhase.PENDING),
    ],
)
async def test_status_maps_argo_phases(
    executor: ArgoExecutor, emulator: KubernetesEmulator, status: dict[str, Any] | None, phase: WorkflowPhase
) -> None:
    request = _request()
    await executor.submit(request)
    if status is not None:
        emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch({"status": status})

    observed = await executor.status(_ref(request.name))

    assert observed.phase is phase


async def test_status_reports_the_message_and_times(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    request = _request()
    await executor.submit(request)
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch(
        {
            "status": {
                "phase": "Failed",
                "message": "child 'codex-planning-x' failed",
                "startedAt": "2026-11-21T13:46:05Z",
                "finishedAt": "2026-11-21T13:58:41.250000+00:00",
                "progress": "0/1",
            }
        }
    )

    observed = await executor.status(_ref(request.name))

    assert observed.phase is WorkflowPhase.FAILED
    assert observed.message == "child 'codex-planning-x' failed"
    assert observed.started_at == datetime(2026, 11, 21, 13, 46, 5, tzinfo=UTC)
    assert observed.finished_at == datetime(2026, 11, 21, 13, 58, 41, 250000, tzinfo=UTC)
    assert observed.details == {"phase": "Failed", "progress": "0/1"}


async def test_status_of_a_running_workflow_has_no_finish_time(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    request = _request()
    await executor.submit(request)
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch(
        {"status": {"phase": "Running", "startedAt": "2026-11-21T13:46:05Z", "finishedAt": None}}
    )

    observed = await executor.status(_ref(request.name))

    assert observed.phase is WorkflowPhase.RUNNING
    assert observed.started_at == datetime(2026, 11, 21, 13, 46, 5, tzinfo=UTC)
    assert observed.finished_at is None
    assert observed.message == ""


@pytest.mark.parametrize(
    ("shutdown", "argo_phase", "phase"),
    [
        ("Terminate", "Failed", WorkflowPhase.CANCELLED),
        ("Stop", "Failed", WorkflowPhase.CANCELLED),
        ("Terminate", "Error", WorkflowPhase.CANCELLED),
        # still stopping: the controller has not acted yet
        ("Terminate", "Running", WorkflowPhase.RUNNING),
        # it finished its work before the shutdown took effect
        ("Stop", "Succeeded", WorkflowPhase.SUCCEEDED),
    ],
)
async def test_a_shut_down_workflow_that_finished_is_cancelled(
    executor: ArgoExecutor,
    emulator: KubernetesEmulator,
    shutdown: str,
    argo_phase: str,
    phase: WorkflowPhase,
) -> None:
    request = _request()
    await executor.submit(request)
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch(
        {"spec": {"shutdown": shutdown}, "status": {"phase": argo_phase}}
    )

    observed = await executor.status(_ref(request.name))

    assert observed.phase is phase
    assert observed.details["shutdown"] == shutdown


async def test_status_of_a_missing_workflow_is_not_found(executor: ArgoExecutor) -> None:
    observed = await executor.status(_ref("codex-planning-20261121-134600-deadbeef"))

    assert observed.phase is WorkflowPhase.NOT_FOUND


async def test_a_reference_from_another_executor_is_refused(executor: ArgoExecutor) -> None:
    with pytest.raises(ExecutorError, match="belongs to the local executor"):
        await executor.status(WorkflowRef("local", NAMESPACE, "codex-planning-x"))


# --- cancel -----------------------------------------------------------------------------------------------


async def test_cancel_terminates_the_workflow(executor: ArgoExecutor, emulator: KubernetesEmulator) -> None:
    request = _request()
    await executor.submit(request)
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch({"status": {"phase": "Running"}})

    await executor.cancel(_ref(request.name))

    stored = _stored(emulator, request.name)
    assert stored["spec"]["shutdown"] == "Terminate"
    assert stored["spec"]["workflowTemplateRef"] == {"name": "github-codex-planning"}
    validate_workflow(stored)
    [patch] = _requests(emulator, "PATCH")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.data == {"spec": {"shutdown": "Terminate"}}


async def test_cancel_then_status_is_cancelled_once_argo_stops_it(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    request = _request()
    await executor.submit(request)
    await executor.cancel(_ref(request.name))
    # what Argo's controller does with a terminated workflow
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch(
        {"status": {"phase": "Failed", "message": "Stopped with strategy 'Terminate'"}}
    )

    observed = await executor.status(_ref(request.name))

    assert observed.phase is WorkflowPhase.CANCELLED
    assert observed.message == "Stopped with strategy 'Terminate'"


async def test_cancel_of_a_missing_workflow_is_fine(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    await executor.cancel(_ref("codex-planning-20261121-134600-deadbeef"))

    assert not emulator.objects
    assert not _requests(emulator, "PATCH")


@pytest.mark.parametrize("argo_phase", ["Succeeded", "Failed", "Error"])
async def test_cancel_leaves_a_finished_workflow_alone(
    executor: ArgoExecutor, emulator: KubernetesEmulator, argo_phase: str
) -> None:
    request = _request()
    await executor.submit(request)
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch({"status": {"phase": argo_phase}})

    await executor.cancel(_ref(request.name))

    assert "shutdown" not in _stored(emulator, request.name)["spec"]
    assert not _requests(emulator, "PATCH")


async def test_cancel_of_a_workflow_already_stopping_sends_nothing(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    request = _request()
    await executor.submit(request)
    emulator.objects[WORKFLOWS, NAMESPACE, request.name].patch({"spec": {"shutdown": "Stop"}})

    await executor.cancel(_ref(request.name))

    assert _stored(emulator, request.name)["spec"]["shutdown"] == "Stop"
    assert not _requests(emulator, "PATCH")


# --- failures of the API server ---------------------------------------------------------------------------


async def test_a_server_error_means_unavailable(executor: ArgoExecutor, emulator: KubernetesEmulator) -> None:
    name = "codex-planning-20261121-134600-0000dead"
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows/{name}"
    emulator[f"get {path}"] << 503 << {"kind": "Status", "code": 503, "message": "etcdserver: leader changed"}

    with pytest.raises(
        ExecutorUnavailable, match=r"HTTP 503 Service Unavailable: etcdserver: leader changed"
    ):
        await executor.status(_ref(name))


async def test_a_refusal_is_an_executor_error_with_status_and_reason(
    executor: ArgoExecutor, emulator: KubernetesEmulator
) -> None:
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows"
    message = 'workflows.argoproj.io is forbidden: User "facteur" cannot create resource "workflows"'
    (
        emulator[f"post {path}"]
        << 403
        << {"kind": "Status", "code": 403, "reason": "Forbidden", "message": message}
    )

    with pytest.raises(ExecutorError) as caught:
        await executor.submit(_request())

    assert not isinstance(caught.value, ExecutorUnavailable)
    assert "HTTP 403 Forbidden" in str(caught.value)
    assert 'User "facteur" cannot create resource' in str(caught.value)


@pytest.fixture
async def unreachable() -> AsyncIterator[ArgoExecutor]:
    """An executor whose API server is a closed port."""
    argo = ArgoExecutor(SETTINGS, ApiClient(Configuration(host=f"http://127.0.0.1:{free_port()}")))
    try:
        yield argo
    finally:
        await argo.aclose()


async def test_an_unreachable_api_server_is_unavailable(unreachable: ArgoExecutor) -> None:
    request = _request()
    with pytest.raises(ExecutorUnavailable, match="Kubernetes API unreachable"):
        await unreachable.submit(request)
    with pytest.raises(ExecutorUnavailable, match="Kubernetes API unreachable"):
        await unreachable.status(_ref(request.name))
    with pytest.raises(ExecutorUnavailable, match="Kubernetes API unreachable"):
        await unreachable.cancel(_ref(request.name))


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_api_server_is_unavailable_after_the_request_timeout(silent_server: str) -> None:
    settings = SETTINGS.model_copy(update={"request_timeout_seconds": 0.2})
    argo = ArgoExecutor(settings, ApiClient(Configuration(host=silent_server)))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ExecutorUnavailable, match="no answer in time"):
            await argo.status(_ref("codex-planning-20261121-134600-0000dead"))
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        await argo.aclose()


# --- the API client factory -------------------------------------------------------------------------------


def _kubeconfig(path: Path, server: str, *, token: str = "t0ken") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "facteur", "user": {"token": token}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "facteur"}}],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def no_service_account() -> None:
    if Path(SERVICE_TOKEN_FILENAME).exists():
        pytest.skip("this machine has an in-cluster service account")


async def test_a_client_from_argo_kubeconfig_drives_the_executor(
    emulator: KubernetesEmulator, tmp_path: Path
) -> None:
    settings = SETTINGS.model_copy(update={"kubeconfig": _kubeconfig(tmp_path / "config", _url(emulator))})

    argo = ArgoExecutor(
        settings, await create_api_client(settings, environ={"HOME": str(tmp_path / "nohome")})
    )
    try:
        request = _request()
        assert (await argo.submit(request)).created
        assert (await argo.status(_ref(request.name))).phase is WorkflowPhase.PENDING
    finally:
        await argo.aclose()
    [post] = _requests(emulator, "POST")
    assert post.headers["Authorization"] == "Bearer t0ken"


async def test_kubeconfig_env_is_used_when_the_setting_is_absent(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "env-config", "http://127.0.0.1:6443")

    client = await create_api_client(ArgoSettings(), environ={"KUBECONFIG": str(path), "HOME": str(tmp_path)})

    try:
        assert client.configuration.host == "http://127.0.0.1:6443"
    finally:
        await client.close()


async def test_the_home_kubeconfig_is_the_last_resort(tmp_path: Path, no_service_account: None) -> None:
    (tmp_path / ".kube").mkdir()
    _kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:7443")

    client = await create_api_client(ArgoSettings(), environ={"HOME": str(tmp_path)})

    try:
        assert client.configuration.host == "http://127.0.0.1:7443"
    finally:
        await client.close()


async def test_a_broken_service_account_falls_back_to_the_home_kubeconfig(
    tmp_path: Path, no_service_account: None
) -> None:
    (tmp_path / ".kube").mkdir()
    _kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:7443")
    environ = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}

    client = await create_api_client(ArgoSettings(), environ=environ)

    try:
        assert client.configuration.host == "http://127.0.0.1:7443"
    finally:
        await client.close()


async def test_a_broken_service_account_without_fallback_is_a_config_error(
    tmp_path: Path, no_service_account: None
) -> None:
    environ = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}

    with pytest.raises(ConfigError, match="in-cluster service account is unusable: Service token file"):
        await create_api_client(ArgoSettings(), environ=environ)


async def test_a_missing_argo_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    settings = ArgoSettings(kubeconfig=tmp_path / "missing")

    with pytest.raises(ConfigError) as caught:
        await create_api_client(settings, environ={"HOME": str(tmp_path)})

    assert str(caught.value) == f"argo.kubeconfig: {tmp_path / 'missing'} does not exist"


async def test_no_config_anywhere_is_a_config_error(tmp_path: Path, no_service_account: None) -> None:
    with pytest.raises(ConfigError, match=r"^argo\.kubeconfig is not set and no Kubernetes config was found"):
        await create_api_client(ArgoSettings(), environ={"HOME": str(tmp_path)})


async def test_a_kubeconfig_env_naming_no_file_is_a_config_error(tmp_path: Path) -> None:
    environ = {"KUBECONFIG": str(tmp_path / "nope"), "HOME": str(tmp_path)}

    with pytest.raises(
        ConfigError, match=r"^argo\.kubeconfig is not set and KUBECONFIG names no existing file"
    ):
        await create_api_client(ArgoSettings(), environ=environ)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("clusters: [\n", "not valid YAML"),
        ("just text\n", "not a kubeconfig file"),
        ("", "not a kubeconfig file"),
    ],
)
async def test_an_unreadable_kubeconfig_is_a_one_line_config_error(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "config"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        await create_api_client(ArgoSettings(kubeconfig=path), environ={"HOME": str(tmp_path)})

    message = str(caught.value)
    assert message.startswith(f"argo.kubeconfig: cannot load the Kubernetes config from {path}: ")
    assert reason in message
    assert "\n" not in message


async def test_a_config_error_never_quotes_credentials(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", "http://127.0.0.1:6443", token="s3cr3t-t0ken")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["contexts"][0]["context"]["cluster"] = "elsewhere"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        await create_api_client(ArgoSettings(kubeconfig=path), environ={"HOME": str(tmp_path)})

    assert "elsewhere" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
