"""The Argo Workflows executor: one Workflow per run, created from the stage's WorkflowTemplate.

The Workflow carries no user text in the clear: the event and the raw payload travel as base64 parameters
(``eventBody``, ``rawEvent``) so that Argo never evaluates a ``{{…}}`` written by a user. Its name is the
run's deterministic workflow name, so submitting the same run twice meets the first Workflow.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast

import aiohttp
import yaml
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from facteur.clock import parse_timestamp
from facteur.errors import ConfigError, ExecutorError, ExecutorUnavailable, WorkflowRefused
from facteur.executors.port import Submission, WorkflowPhase, WorkflowRef, WorkflowRequest, WorkflowStatus
from facteur.settings import ArgoSettings
from facteur.templates.event_file import ENV as EVENT_ENV

logger = logging.getLogger(__name__)

KIND: Final = "argo"
GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "workflows"
API_VERSION: Final = f"{GROUP}/{VERSION}"

LABEL_STAGE: Final = "codex.stage"
LABEL_IDEA: Final = "codex.idea"
LABEL_TASK: Final = "codex.task"
LABEL_RUN: Final = "codex.run"
ANNOTATION_REPOSITORY: Final = "codex.repository"
ANNOTATION_ISSUE_NUMBER: Final = "codex.issue_number"
ANNOTATION_HEAD: Final = "codex.head"
ANNOTATION_BASE: Final = "codex.base"
#: Linux's limit on one environment string (MAX_ARG_STRLEN: "NAME=value" and its terminating NUL); the init
#: container decodes the event from the variable EVENT_ENV
MAX_ENV_STRING: Final = 128 * 1024

#: marks an annotation value that held ``{{`` or ``}}`` and is stored base64-encoded instead
ANNOTATION_ENCODED_PREFIX: Final = "base64:"
PARAM_EVENT_BODY: Final = "eventBody"
PARAM_RAW_EVENT: Final = "rawEvent"

#: Argo's strategy that stops the workflow at once (``argo terminate``)
SHUTDOWN_TERMINATE: Final = "Terminate"

#: Argo refuses workflow names longer than a label value, since it labels the pods with them
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_NAME = 63
#: the CRD's pattern for parameter names
_PARAMETER_NAME = re.compile(r"[-a-zA-Z0-9_]+")

_PHASES: Final[Mapping[str, WorkflowPhase]] = {
    "": WorkflowPhase.PENDING,
    "Pending": WorkflowPhase.PENDING,
    "Running": WorkflowPhase.RUNNING,
    "Succeeded": WorkflowPhase.SUCCEEDED,
    "Failed": WorkflowPhase.FAILED,
    "Error": WorkflowPhase.FAILED,
}
_FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed", "Error"})

#: failures of the connection itself: the API server cannot be reached or did not answer in time
_TRANSPORT_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)
#: HTTP statuses that say "try again later" rather than "this request is wrong"
_RETRYABLE_STATUS: Final = 429
_MAX_DETAIL = 200


# --- the manifest -----------------------------------------------------------------------------------------


def build_workflow(settings: ArgoSettings, request: WorkflowRequest) -> dict[str, Any]:
    """The Workflow manifest of a run (pure: same settings and request, same manifest)."""
    if len(request.name) > _MAX_NAME or not _NAME.fullmatch(request.name):
        raise ExecutorError(
            f"invalid workflow name {request.name!r}: expected at most {_MAX_NAME} lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    stage = request.stage.value
    template = settings.templates.get(stage)
    if not template:
        raise ExecutorError(
            f"no WorkflowTemplate is configured for stage {stage}: set argo.templates.{stage}"
        )
    for name in settings.parameters:
        if not _PARAMETER_NAME.fullmatch(name):
            raise ExecutorError(
                f"invalid workflow parameter name {name!r} in argo.parameters.{name}: "
                "expected letters, digits, '-' and '_'"
            )

    event_body = _b64(request.event_body)
    if len(event_body) + len(EVENT_ENV) + 2 > MAX_ENV_STRING:
        raise WorkflowRefused(
            f"the event of run {request.run_id} is {len(request.event_body):,} bytes of JSON, "
            f"{len(event_body):,} in base64: the stage pod receives it in one environment variable, which "
            f"Linux limits to {MAX_ENV_STRING // 1024} KiB (about 96 KiB of JSON); shorten what the run "
            "carries (plan, dependencies' summaries, spec)"
        )
    parameters = {
        **settings.parameters,
        PARAM_EVENT_BODY: event_body,
        PARAM_RAW_EVENT: _b64(request.raw_event),
    }
    spec: dict[str, Any] = {
        "workflowTemplateRef": {"name": template},
        "arguments": {
            "parameters": [{"name": name, "value": parameters[name]} for name in sorted(parameters)],
        },
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": {
            "name": request.name,
            "namespace": settings.namespace,
            "labels": {
                LABEL_STAGE: stage,
                LABEL_IDEA: str(request.idea_id),
                LABEL_TASK: str(request.task_id),
                LABEL_RUN: str(request.run_id),
            },
            "annotations": {
                ANNOTATION_REPOSITORY: _annotation(request.repository),
                ANNOTATION_ISSUE_NUMBER: str(request.issue_number),
                ANNOTATION_HEAD: _annotation(request.head),
                ANNOTATION_BASE: _annotation(request.base),
            },
        },
        "spec": spec,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _annotation(text: str) -> str:
    """An annotation value from outside (a branch may be called ``{{…}}``): encoded when Argo could read an
    expression in it, as ``base64:<encoded text>``."""
    if "{{" in text or "}}" in text:
        return ANNOTATION_ENCODED_PREFIX + _b64(text.encode())
    return text


# --- the executor -----------------------------------------------------------------------------------------


class ArgoExecutor:
    """Runs each stage as an Argo Workflow in one namespace: an :class:`~facteur.executors.port.Executor`."""

    def __init__(self, settings: ArgoSettings, api_client: ApiClient) -> None:
        self._settings = settings
        self._api_client = api_client
        self._objects = CustomObjectsApi(api_client)
        self._timeout = settings.request_timeout_seconds

    @property
    def kind(self) -> str:
        return KIND

    @property
    def namespace(self) -> str:
        return self._settings.namespace

    def build_workflow(self, request: WorkflowRequest) -> dict[str, Any]:
        """The manifest :meth:`submit` creates for ``request``."""
        return build_workflow(self._settings, request)

    async def submit(self, request: WorkflowRequest) -> Submission:
        manifest = self.build_workflow(request)
        namespace = self._settings.namespace
        ref = WorkflowRef(KIND, namespace, request.name)
        run = str(request.run_id)
        # twice at most: a workflow deleted between our create and our read leaves the name free again
        for _ in range(2):
            if await self._create(namespace, request.name, manifest):
                logger.info(
                    "workflow created: name=%s namespace=%s run=%s stage=%s template=%s",
                    request.name,
                    namespace,
                    run,
                    request.stage.value,
                    manifest["spec"]["workflowTemplateRef"]["name"],
                )
                return Submission(ref, created=True)
            existing = await self._read(namespace, request.name)
            if existing is None:
                continue
            owner = _labels(existing).get(LABEL_RUN)
            if owner == run:
                logger.info(
                    "workflow already exists: name=%s namespace=%s run=%s", request.name, namespace, run
                )
                return Submission(ref, created=False)
            raise ExecutorError(
                f"workflow name {namespace}/{request.name} is taken by another run "
                f"({LABEL_RUN}={owner or '<none>'}), not by run {run}"
            )
        raise ExecutorError(
            f"workflow {namespace}/{request.name} could not be created: its name kept conflicting"
        )

    async def status(self, ref: WorkflowRef) -> WorkflowStatus:
        self._check_ref(ref)
        workflow = await self._read(ref.namespace, ref.name)
        if workflow is None:
            return WorkflowStatus(phase=WorkflowPhase.NOT_FOUND, message="the workflow does not exist")
        return _status_of(workflow, ref)

    async def cancel(self, ref: WorkflowRef) -> None:
        self._check_ref(ref)
        workflow = await self._read(ref.namespace, ref.name)
        if workflow is None:
            logger.info("workflow to cancel not found: name=%s namespace=%s", ref.name, ref.namespace)
            return
        phase = _str(_mapping(workflow.get("status")).get("phase"))
        if phase in _FINISHED_PHASES:
            logger.info(
                "workflow already finished: name=%s namespace=%s phase=%s", ref.name, ref.namespace, phase
            )
            return
        shutdown = _str(_mapping(workflow.get("spec")).get("shutdown"))
        if shutdown:
            logger.info(
                "workflow already shutting down: name=%s namespace=%s shutdown=%s",
                ref.name,
                ref.namespace,
                shutdown,
            )
            return
        if await self._patch(ref.namespace, ref.name, {"spec": {"shutdown": SHUTDOWN_TERMINATE}}):
            logger.info("workflow terminated: name=%s namespace=%s", ref.name, ref.namespace)
        else:
            logger.info("workflow to cancel not found: name=%s namespace=%s", ref.name, ref.namespace)

    async def aclose(self) -> None:
        await self._api_client.close()

    # --- the API calls: each translates its driver's errors ---

    async def _create(self, namespace: str, name: str, manifest: dict[str, Any]) -> bool:
        """Create the workflow; False when an object of that name already exists."""
        try:
            await self._objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, manifest, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise _api_error(exc, "create", namespace, name) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(exc, "create", namespace, name) from exc
        return True

    async def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The workflow as stored; None when there is none."""
        try:
            found = await self._objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, "read", namespace, name) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(exc, "read", namespace, name) from exc
        if not isinstance(found, dict):
            raise ExecutorError(f"cannot read workflow {namespace}/{name}: the API answered with no object")
        return cast(dict[str, Any], found)

    async def _patch(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """JSON merge-patch the workflow; False when it does not exist."""
        try:
            await self._objects.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                patch,
                _request_timeout=self._timeout,
                # a dict body would go as json-patch; the stubs omit _content_type, which the client takes
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _api_error(exc, "patch", namespace, name) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(exc, "patch", namespace, name) from exc
        return True

    def _check_ref(self, ref: WorkflowRef) -> None:
        if ref.executor != KIND:
            raise ExecutorError(
                f"workflow {ref.namespace}/{ref.name} belongs to the {ref.executor} executor, not argo"
            )


# --- reading workflows ------------------------------------------------------------------------------------


def _status_of(workflow: Mapping[str, Any], ref: WorkflowRef) -> WorkflowStatus:
    status = _mapping(workflow.get("status"))
    raw_phase = _str(status.get("phase"))
    shutdown = _str(_mapping(workflow.get("spec")).get("shutdown"))
    phase = _PHASES.get(raw_phase)
    if phase is None:
        logger.warning(
            "unknown workflow phase: name=%s namespace=%s phase=%s", ref.name, ref.namespace, raw_phase
        )
        phase = WorkflowPhase.PENDING
    # Argo ends a shut-down workflow as Failed (or Error); one that succeeded before the shutdown took effect
    # did its work and stays Succeeded
    if shutdown and phase is WorkflowPhase.FAILED:
        phase = WorkflowPhase.CANCELLED
    details = {"phase": raw_phase}
    if shutdown:
        details["shutdown"] = shutdown
    progress = _str(status.get("progress"))
    if progress:
        details["progress"] = progress
    return WorkflowStatus(
        phase=phase,
        message=_str(status.get("message")),
        started_at=_parse_time(status.get("startedAt")),
        finished_at=_parse_time(status.get("finishedAt")),
        details=details,
    )


def _labels(workflow: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(_mapping(workflow.get("metadata")).get("labels"))


def _mapping(value: object) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], value) if isinstance(value, Mapping) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp (``2026-11-21T13:46:00Z``) as an aware datetime; None if absent or unreadable."""
    parsed = parse_timestamp(value)
    if parsed is None and isinstance(value, str) and value:
        logger.warning("unreadable workflow timestamp: value=%r", value)
    return parsed


# --- errors -----------------------------------------------------------------------------------------------


def _api_error(exc: ApiException, action: str, namespace: str, name: str) -> ExecutorError:
    status = exc.status if isinstance(exc.status, int) else 0
    reason = str(exc.reason or "").strip()
    detail = _status_message(exc.body)
    text = f"cannot {action} workflow {namespace}/{name}: HTTP {status} {reason}".rstrip()
    if detail:
        text = f"{text}: {detail}"
    if status >= 500 or status == _RETRYABLE_STATUS:
        return ExecutorUnavailable(text)
    return ExecutorError(text)


def _unavailable(exc: BaseException, action: str, namespace: str, name: str) -> ExecutorUnavailable:
    cause = "no answer in time" if isinstance(exc, TimeoutError) else str(exc).strip() or type(exc).__name__
    return ExecutorUnavailable(
        f"cannot {action} workflow {namespace}/{name}: Kubernetes API unreachable: {cause}"
    )


def _status_message(body: object) -> str:
    """The ``message`` of a Kubernetes Status body, shortened; empty when there is none."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    message = _str(_mapping(decoded).get("message")).strip().replace("\n", " ")
    return message if len(message) <= _MAX_DETAIL else message[: _MAX_DETAIL - 1] + "…"


# --- the API client ---------------------------------------------------------------------------------------


async def create_api_client(settings: ArgoSettings, *, environ: Mapping[str, str] | None = None) -> ApiClient:
    """A Kubernetes API client configured from the first of ``argo.kubeconfig``, ``KUBECONFIG``, the
    in-cluster service account and ``~/.kube/config``.

    Raises :class:`ConfigError`, one line naming ``argo.kubeconfig``, when none gives a usable configuration.
    """
    env = os.environ if environ is None else environ
    source = _config_source(settings, env)
    configuration = Configuration()
    if source.kubeconfig is None:
        problem = _load_in_cluster(env, configuration)
        if problem and source.fallback is None:
            raise ConfigError(
                f"argo.kubeconfig is not set and the in-cluster service account is unusable: {problem}"
            )
        if problem and source.fallback is not None:
            logger.warning("in-cluster config unusable: reason=%s fallback=%s", problem, source.fallback)
            source = _ConfigSource(str(source.fallback), str(source.fallback))
    if source.kubeconfig is not None:
        await _load_kubeconfig(source, configuration)
    logger.info("kubernetes config loaded: source=%s host=%s", source.description, configuration.host)
    return ApiClient(configuration=configuration)


@dataclass(frozen=True, slots=True)
class _ConfigSource:
    description: str
    #: the kubeconfig file(s) to read (``:``-separated, like KUBECONFIG); None: the in-cluster service account
    kubeconfig: str | None
    #: where to look when the in-cluster service account fails
    fallback: Path | None = None


def _config_source(settings: ArgoSettings, env: Mapping[str, str]) -> _ConfigSource:
    """Where the configuration comes from (the checks touch the file system, so they stay out of the loop)."""
    if settings.kubeconfig is not None:
        path = settings.kubeconfig.expanduser()
        if not path.is_file():
            raise ConfigError(f"argo.kubeconfig: {path} does not exist")
        return _ConfigSource(str(path), str(path))

    kubeconfig_env = env.get("KUBECONFIG", "")
    if kubeconfig_env:
        files = [Path(part).expanduser() for part in kubeconfig_env.split(os.pathsep) if part]
        if not any(file.is_file() for file in files):
            raise ConfigError(
                f"argo.kubeconfig is not set and KUBECONFIG names no existing file ({kubeconfig_env})"
            )
        return _ConfigSource(f"KUBECONFIG={kubeconfig_env}", kubeconfig_env)

    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    default = home / ".kube" / "config"
    fallback = default if default.is_file() else None
    if env.get(SERVICE_HOST_ENV_NAME):
        return _ConfigSource("in-cluster service account", None, fallback)
    if fallback is not None:
        return _ConfigSource(str(fallback), str(fallback))
    raise ConfigError(
        "argo.kubeconfig is not set and no Kubernetes config was found "
        f"(no KUBECONFIG, not in a cluster, no {default})"
    )


def _load_in_cluster(env: Mapping[str, str], configuration: Configuration) -> str:
    """Fill ``configuration`` from the pod's service account; the problem, or "" when it worked."""
    loader = InClusterConfigLoader(
        token_filename=SERVICE_TOKEN_FILENAME, cert_filename=SERVICE_CERT_FILENAME, environ=dict(env)
    )
    try:
        loader.load_and_set(configuration)
    except (kube_config.ConfigException, OSError) as exc:
        return _reason(exc)
    return ""


async def _load_kubeconfig(source: _ConfigSource, configuration: Configuration) -> None:
    try:
        await kube_config.load_kube_config(
            config_file=source.kubeconfig, client_configuration=configuration, persist_config=False
        )
    except (
        kube_config.ConfigException,
        yaml.YAMLError,
        OSError,
        LookupError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise ConfigError(
            f"argo.kubeconfig: cannot load the Kubernetes config from {source.description}: {_reason(exc)}"
        ) from None


def _reason(exc: BaseException) -> str:
    """Why a config could not be loaded, in one short line that never quotes the config's content."""
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        return f"not valid YAML (line {mark.line + 1})" if mark is not None else "not valid YAML"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    if isinstance(exc, kube_config.ConfigException):
        text = str(exc).strip()
        message = text.splitlines()[0] if text else "invalid"
        # the library names the offending node by printing it, credentials included: keep what comes before
        message = message.split(" in ", 1)[0]
        return message if len(message) <= _MAX_DETAIL else message[: _MAX_DETAIL - 1] + "…"
    return f"not a kubeconfig file ({type(exc).__name__})"
