"""The stage WorkflowTemplates, built from the settings (pure: same settings, same documents).

One WorkflowTemplate per stage named in ``argo.templates``, under that name, in ``argo.namespace``. Its
pod runs an init container that writes the event file from the base64 ``eventBody`` parameter
(:mod:`facteur.templates.event_file`: the value travels in an environment variable, never through a
shell), then ``facteur stage <stage> --event /work/event.json``. It declares exactly the parameters the
Argo executor passes (``eventBody``, ``rawEvent`` and ``argo.parameters``). See docs/templates.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from facteur.domain.stages import Stage
from facteur.errors import ConfigError
from facteur.executors.argo import API_VERSION, LABEL_STAGE, PARAM_EVENT_BODY, PARAM_RAW_EVENT
from facteur.settings import Settings, TemplateSettings
from facteur.templates import event_file

ENTRYPOINT: Final = "stage"
MAIN_CONTAINER: Final = "main"
INIT_CONTAINER: Final = "event"
EVENT_DIR: Final = "/work"
EVENT_FILE: Final = f"{EVENT_DIR}/event.json"
WORKSPACE_DIR: Final = "/workspace"
DOCKER_HOST: Final = "tcp://127.0.0.1:2375"
#: the only Argo expression a rendered template holds: replaced by base64 text, never by user text
EVENT_BODY_REFERENCE: Final = "{{workflow.parameters." + PARAM_EVENT_BODY + "}}"

_EVENT_VOLUME: Final = "event"
_WORKSPACE_VOLUME: Final = "workspace"
_DOCKER_VOLUME: Final = "docker-lib"
_COMMON_LABELS: Final = {
    "app.kubernetes.io/name": "facteur",
    "app.kubernetes.io/component": "stage",
    "app.kubernetes.io/managed-by": "facteur-templates",
}
#: the init container only decodes a few kilobytes
_INIT_RESOURCES: Final = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
_DOCKER_RESOURCES: Final = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}
_EXPRESSION: Final = re.compile(r"\{\{.*?\}\}|\{\{|\}\}")


def stages(settings: Settings) -> list[Stage]:
    """The stages that get a template: those named in ``argo.templates``, in pipeline order."""
    return [stage for stage in Stage if stage.value in settings.argo.templates]


def parameter_names(settings: Settings) -> list[str]:
    """The workflow parameters a template declares: the executor's, sorted as it sorts them."""
    return sorted({*settings.argo.parameters, PARAM_EVENT_BODY, PARAM_RAW_EVENT})


def workflow_template(settings: Settings, stage: Stage) -> dict[str, Any]:
    """The WorkflowTemplate of ``stage``; raise :class:`ConfigError` if a setting would let Argo read an
    expression (``{{…}}``) in it."""
    config = settings.templates
    name = settings.argo.templates.get(stage.value)
    if not name:
        raise ConfigError(f"no WorkflowTemplate is named for stage {stage.value}: set argo.templates")
    implementation = stage is Stage.IMPLEMENTATION
    spec: dict[str, Any] = {
        "entrypoint": ENTRYPOINT,
        "arguments": {"parameters": _parameters(settings)},
        "workflowMetadata": {"labels": {LABEL_STAGE: stage.value}},
    }
    if settings.argo.service_account:
        spec["serviceAccountName"] = settings.argo.service_account
    spec["securityContext"] = {"fsGroup": config.run_as_user}
    spec["volumes"] = _volumes(config, implementation)
    if implementation and not config.resume_claim:
        spec["volumeClaimTemplates"] = [_claim_template(config)]
        # a failed run's workspace stays (with its workflow) for a retry or a look; a success frees it
        spec["volumeClaimGC"] = {"strategy": "OnWorkflowSuccess"}
    if config.semaphore_config_map and stage.value in config.heavy_stages:
        spec["synchronization"] = {
            "semaphores": [
                {"configMapKeyRef": {"name": config.semaphore_config_map, "key": config.semaphore_key}}
            ]
        }
    spec["templates"] = [_stage_template(config, stage)]
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowTemplate",
        "metadata": {
            "name": name,
            "namespace": settings.argo.namespace,
            "labels": {**_COMMON_LABELS, LABEL_STAGE: stage.value},
        },
        "spec": spec,
    }
    _check_expressions(manifest, f"the {stage.value} WorkflowTemplate")
    return manifest


def semaphore_config_map(settings: Settings) -> dict[str, Any] | None:
    """The ConfigMap that holds the heavy stages' semaphore, or None when there is no semaphore."""
    config = settings.templates
    if not config.semaphore_config_map or not config.heavy_stages:
        return None
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config.semaphore_config_map,
            "namespace": settings.argo.namespace,
            "labels": dict(_COMMON_LABELS),
        },
        "data": {config.semaphore_key: str(config.semaphore_limit)},
    }
    _check_expressions(manifest, "the semaphore ConfigMap")
    return manifest


# --- the parts --------------------------------------------------------------------------------------------


def _parameters(settings: Settings) -> list[dict[str, str]]:
    declared: list[dict[str, str]] = []
    for name in parameter_names(settings):
        if name == PARAM_EVENT_BODY:
            declared.append({"name": name})  # no default: a workflow without an event is refused
        elif name == PARAM_RAW_EVENT:
            declared.append({"name": name, "value": ""})
        else:
            declared.append({"name": name, "value": settings.argo.parameters[name]})
    return declared


def _volumes(config: TemplateSettings, implementation: bool) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": _EVENT_VOLUME, "emptyDir": {}}]
    if not implementation:
        volumes.append({"name": _WORKSPACE_VOLUME, "emptyDir": {}})
    elif config.resume_claim:
        volumes.append(
            {"name": _WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": config.resume_claim}}
        )
    if config.docker_sidecar:
        volumes.append({"name": _DOCKER_VOLUME, "emptyDir": {}})
    return volumes


def _claim_template(config: TemplateSettings) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": config.resume_storage}},
    }
    if config.resume_storage_class:
        claim["storageClassName"] = config.resume_storage_class
    return {"metadata": {"name": _WORKSPACE_VOLUME}, "spec": claim}


def _stage_template(config: TemplateSettings, stage: Stage) -> dict[str, Any]:
    template: dict[str, Any] = {
        "name": ENTRYPOINT,
        "metadata": {"labels": {**_COMMON_LABELS, LABEL_STAGE: stage.value}},
    }
    if config.retry_limit:
        template["retryStrategy"] = {
            "limit": config.retry_limit,
            "retryPolicy": config.retry_policy,
            "backoff": {"duration": config.retry_backoff, "factor": config.retry_backoff_factor},
        }
    template["initContainers"] = [_init_container(config)]
    template["container"] = _main_container(config, stage)
    if config.docker_sidecar:
        template["sidecars"] = [_docker_sidecar(config)]
    return template


def _init_container(config: TemplateSettings) -> dict[str, Any]:
    return {
        "name": INIT_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        # an argument array: no shell reads the command, and the event is in the environment, not in it
        "command": ["python3", "-m", event_file.__name__, EVENT_FILE],
        "env": [{"name": event_file.ENV, "value": EVENT_BODY_REFERENCE}],
        "resources": _INIT_RESOURCES,
        "securityContext": _restricted(config),
        "volumeMounts": [{"name": _EVENT_VOLUME, "mountPath": EVENT_DIR}],
    }


def _main_container(config: TemplateSettings, stage: Stage) -> dict[str, Any]:
    env: list[dict[str, Any]] = []
    for variable, ref in sorted(config.secrets.items()):
        secret, _, key = ref.partition("/")
        selector: dict[str, Any] = {"name": secret, "key": key}
        if variable in config.optional_secrets:
            selector["optional"] = True
        env.append({"name": variable, "valueFrom": {"secretKeyRef": selector}})
    env.extend({"name": variable, "value": value} for variable, value in sorted(config.env.items()))
    if config.docker_sidecar:
        env.append({"name": "DOCKER_HOST", "value": DOCKER_HOST})
    return {
        "name": MAIN_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["facteur", "stage", stage.value, "--event", EVENT_FILE],
        "workingDir": WORKSPACE_DIR,
        "env": env,
        "resources": _resources(config),
        "securityContext": _restricted(config),
        "volumeMounts": [
            {"name": _EVENT_VOLUME, "mountPath": EVENT_DIR, "readOnly": True},
            {"name": _WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR},
        ],
    }


def _docker_sidecar(config: TemplateSettings) -> dict[str, Any]:
    return {
        "name": "docker",
        "image": config.docker_image,
        # listen on the pod's loopback only: the stage container shares it, nothing else reaches it
        "args": ["dockerd", "--host=unix:///var/run/docker.sock", f"--host={DOCKER_HOST}", "--tls=false"],
        "env": [{"name": "DOCKER_TLS_CERTDIR", "value": ""}],
        "resources": _DOCKER_RESOURCES,
        "securityContext": {"privileged": True, "runAsUser": 0, "runAsNonRoot": False},
        "volumeMounts": [{"name": _DOCKER_VOLUME, "mountPath": "/var/lib/docker"}],
    }


def _resources(config: TemplateSettings) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    for kind, cpu, memory in (
        ("requests", config.cpu_request, config.memory_request),
        ("limits", config.cpu_limit, config.memory_limit),
    ):
        values = {name: value for name, value in (("cpu", cpu), ("memory", memory)) if value}
        if values:
            resources[kind] = values
    return resources


def _restricted(config: TemplateSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": config.run_as_user,
        "runAsGroup": config.run_as_user,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _check_expressions(manifest: dict[str, Any], what: str) -> None:
    """Argo evaluates every ``{{…}}`` of a workflow: only the event reference may be one."""
    for path, text in _strings(manifest, "$"):
        for found in _EXPRESSION.findall(text):
            if found != EVENT_BODY_REFERENCE:
                raise ConfigError(
                    f"{what}: {path} holds {found!r}, which Argo would evaluate as an expression; "
                    "remove the braces from the setting that put it there"
                )


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(str(key), f"{path}.{key} (key)")
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
