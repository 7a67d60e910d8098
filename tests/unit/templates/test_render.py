"""The rendered WorkflowTemplates: valid for Argo, deterministic, and what the settings ask for."""

from __future__ import annotations

from typing import Any

import pytest

from facteur.domain.stages import Stage
from facteur.errors import ConfigError
from facteur.executors.argo import build_workflow
from facteur.settings import Settings
from facteur.templates.files import render_files
from facteur.templates.render import (
    EVENT_BODY_REFERENCE,
    EVENT_FILE,
    semaphore_config_map,
    stages,
    workflow_template,
)
from tests.support.argo_schema import validate_workflow_template
from tests.unit.templates.conftest import manifest_strings, settings_with, workflow_request

MAIN = [Stage.PLANNING, Stage.IMPLEMENTATION, Stage.REVIEW]

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {},
    "everything-on": {
        "templates": {
            "docker_sidecar": True,
            "resume_storage_class": "longhorn",
            "heavy_stages": ["implementation", "review"],
            "env": {"FACTEUR_AGENT__KIND": "claude", "LOG_FORMAT": "json"},
        },
        "argo": {"service_account": "facteur-workflow", "parameters": {"cluster": "lab", "tier": "gold"}},
    },
    "named-claim-no-semaphore-no-retry-no-limits": {
        "templates": {
            "resume_claim": "facteur-workspaces",
            "semaphore_config_map": "",
            "retry_limit": 0,
            "cpu_limit": "",
            "memory_limit": "",
            "secrets": {"CODEX_API_KEY": "", "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""},
            "optional_secrets": ["FACTEUR_API_TOKEN"],
        }
    },
    "more-stages": {"argo": {"templates": {"integration": "facteur-integration"}}},
}


def _template(settings: Settings, stage: Stage) -> dict[str, Any]:
    return workflow_template(settings, stage)


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    (template,) = manifest["spec"]["templates"]
    assert template["name"] == manifest["spec"]["entrypoint"]
    pod: dict[str, Any] = template
    return pod


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_template_is_valid_for_argo(variant: str) -> None:
    settings = settings_with(**VARIANTS[variant])
    rendered = stages(settings)
    assert set(MAIN) <= set(rendered)
    for stage in rendered:
        validate_workflow_template(_template(settings, stage))


def test_the_validator_would_catch_a_mistake() -> None:
    manifest = _template(Settings(), Stage.PLANNING)
    manifest["spec"]["templates"][0]["container"]["imagePullPolicy "] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolicy "):
        validate_workflow_template(manifest)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendering_is_deterministic(variant: str) -> None:
    first = render_files(settings_with(**VARIANTS[variant]))
    second = render_files(settings_with(**VARIANTS[variant]))
    assert first == second
    for file in first:
        assert "&id" not in file.text and "*id" not in file.text, f"{file.name} holds a YAML anchor"


def test_one_template_per_stage_named_and_placed_as_the_executor_refers_to_it() -> None:
    settings = settings_with(
        argo={"namespace": "ci", "templates": {"review": "my-review", "integration": "my-integration"}}
    )
    names = {stage: _template(settings, stage)["metadata"] for stage in stages(settings)}
    assert {stage: meta["name"] for stage, meta in names.items()} == {
        Stage.PLANNING: "github-codex-planning",
        Stage.IMPLEMENTATION: "github-codex-implementation",
        Stage.REVIEW: "my-review",
        Stage.INTEGRATION: "my-integration",
    }
    assert {meta["namespace"] for meta in names.values()} == {"ci"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_templates_declare_exactly_the_parameters_the_executor_passes(variant: str) -> None:
    settings = settings_with(**VARIANTS[variant])
    for stage in stages(settings):
        template = _template(settings, stage)
        workflow = build_workflow(settings.argo, workflow_request(stage, {"stage": stage.value}))
        assert workflow["spec"]["workflowTemplateRef"]["name"] == template["metadata"]["name"]
        assert workflow["metadata"]["namespace"] == template["metadata"]["namespace"]
        passed = [p["name"] for p in workflow["spec"]["arguments"]["parameters"]]
        declared = template["spec"]["arguments"]["parameters"]
        assert [p["name"] for p in declared] == passed
        # the event has no default (a workflow without one is refused); extra parameters default as set
        defaults = {p["name"]: p.get("value") for p in declared}
        assert defaults.pop("eventBody") is None
        assert defaults.pop("rawEvent") == ""
        assert defaults == settings.argo.parameters


@pytest.mark.parametrize("stage", MAIN)
def test_the_stage_command_reads_the_event_file_written_by_the_init_container(stage: Stage) -> None:
    pod = _pod(_template(Settings(), stage))
    main = pod["container"]
    assert main["command"] == ["facteur", "stage", stage.value, "--event", EVENT_FILE]
    assert "args" not in main
    (init,) = pod["initContainers"]
    assert init["command"] == ["python3", "-m", "facteur.templates.event_file", EVENT_FILE]
    assert _env(init) == {"EVENT_BODY_BASE64": EVENT_BODY_REFERENCE}
    # both mount the event volume where the file is; the stage only reads it
    init_mount = {m["name"]: m for m in init["volumeMounts"]}["event"]
    main_mount = {m["name"]: m for m in main["volumeMounts"]}["event"]
    assert init_mount["mountPath"] == main_mount["mountPath"] == "/work"
    assert main_mount["readOnly"] is True


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_shell_and_a_single_argo_expression_the_event_reference(variant: str) -> None:
    settings = settings_with(**VARIANTS[variant])
    for stage in stages(settings):
        manifest = _template(settings, stage)
        text = "\n".join(manifest_strings(manifest))
        assert text.count("{{") == text.count("}}") == 1
        assert text.count(EVENT_BODY_REFERENCE) == 1
        pod = _pod(manifest)
        for container in [*pod["initContainers"], pod["container"], *pod.get("sidecars", [])]:
            argv = [*container.get("command", []), *container.get("args", [])]
            assert not {"sh", "bash", "-c", "/bin/sh", "/bin/bash"} & set(argv), container["name"]


def test_labels_on_the_template_its_workflows_and_their_pods() -> None:
    for stage in MAIN:
        manifest = _template(Settings(), stage)
        assert manifest["metadata"]["labels"]["codex.stage"] == stage.value
        assert manifest["spec"]["workflowMetadata"]["labels"] == {"codex.stage": stage.value}
        assert _pod(manifest)["metadata"]["labels"]["codex.stage"] == stage.value


def test_resources_come_from_the_settings() -> None:
    settings = settings_with(
        templates={"cpu_request": "500m", "memory_request": "1Gi", "cpu_limit": "2", "memory_limit": "3Gi"}
    )
    main = _pod(_template(settings, Stage.REVIEW))["container"]
    assert main["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }
    unlimited = settings_with(templates={"cpu_limit": "", "memory_limit": ""})
    main = _pod(_template(unlimited, Stage.REVIEW))["container"]
    assert main["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}


def test_secrets_are_secret_key_refs_and_never_values() -> None:
    settings = settings_with(
        templates={
            "secrets": {
                "GH_TOKEN": "gh/token",
                "OPENAI_API_KEY": "keys/openai",
                "GITHUB_TOKEN": "",
                "CODEX_API_KEY": "",
                "ANTHROPIC_API_KEY": "",
                "FACTEUR_API_TOKEN": "",
            },
            "optional_secrets": ["OPENAI_API_KEY"],
        }
    )
    env = _pod(_template(settings, Stage.PLANNING))["container"]["env"]
    assert env == [
        {"name": "GH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "gh", "key": "token"}}},
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "keys", "key": "openai", "optional": True}},
        },
    ]


def test_the_default_secrets_cover_github_the_agents_and_facteur() -> None:
    env = _env(_pod(_template(Settings(), Stage.IMPLEMENTATION))["container"])
    assert {"GH_TOKEN", "GITHUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FACTEUR_API_TOKEN"} <= set(
        env
    )
    assert all("secretKeyRef" in value for value in env.values())
    assert "optional" not in env["GH_TOKEN"]["secretKeyRef"]  # no GitHub token: the pod does not start


def test_docker_sidecar_only_when_enabled() -> None:
    off = _pod(_template(Settings(), Stage.IMPLEMENTATION))
    assert "sidecars" not in off
    assert "DOCKER_HOST" not in _env(off["container"])

    manifest = _template(settings_with(templates={"docker_sidecar": True}), Stage.IMPLEMENTATION)
    pod = _pod(manifest)
    (docker,) = pod["sidecars"]
    assert docker["securityContext"]["privileged"] is True
    assert "--host=tcp://127.0.0.1:2375" in docker["args"]  # the pod's loopback, not the network
    assert _env(pod["container"])["DOCKER_HOST"] == "tcp://127.0.0.1:2375"
    assert {"name": "docker-lib", "emptyDir": {}} in manifest["spec"]["volumes"]


def test_the_stage_containers_run_as_the_image_user_not_root() -> None:
    pod = _pod(_template(Settings(), Stage.PLANNING))
    for container in (pod["initContainers"][0], pod["container"]):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["allowPrivilegeEscalation"] is False


def test_implementation_keeps_its_workspace_on_a_claim() -> None:
    manifest = _template(Settings(), Stage.IMPLEMENTATION)
    (claim,) = manifest["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "workspace"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert manifest["spec"]["volumeClaimGC"] == {"strategy": "OnWorkflowSuccess"}
    volumes = {volume["name"] for volume in manifest["spec"]["volumes"]}
    assert "workspace" not in volumes  # the claim template provides it
    mounts = {m["name"]: m["mountPath"] for m in _pod(manifest)["container"]["volumeMounts"]}
    assert mounts["workspace"] == _pod(manifest)["container"]["workingDir"] == "/workspace"

    for stage in (Stage.PLANNING, Stage.REVIEW):
        other = _template(Settings(), stage)
        assert "volumeClaimTemplates" not in other["spec"]
        assert {"name": "workspace", "emptyDir": {}} in other["spec"]["volumes"]


def test_implementation_may_use_a_named_claim_instead() -> None:
    manifest = _template(settings_with(templates={"resume_claim": "shared-work"}), Stage.IMPLEMENTATION)
    assert "volumeClaimTemplates" not in manifest["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "shared-work"}} in manifest["spec"][
        "volumes"
    ]


def test_heavy_stages_hold_the_semaphore() -> None:
    settings = Settings()
    expected = {"semaphores": [{"configMapKeyRef": {"name": "facteur-stage-semaphore", "key": "heavy"}}]}
    assert _template(settings, Stage.IMPLEMENTATION)["spec"]["synchronization"] == expected
    assert "synchronization" not in _template(settings, Stage.PLANNING)["spec"]
    config_map = semaphore_config_map(settings)
    assert config_map is not None
    assert config_map["data"] == {"heavy": "4"}
    assert config_map["metadata"]["namespace"] == settings.argo.namespace

    custom = settings_with(
        templates={"heavy_stages": ["review"], "semaphore_key": "slots", "semaphore_limit": 7}
    )
    assert "synchronization" not in _template(custom, Stage.IMPLEMENTATION)["spec"]
    semaphores = _template(custom, Stage.REVIEW)["spec"]["synchronization"]["semaphores"]
    assert semaphores[0]["configMapKeyRef"]["key"] == "slots"
    assert semaphore_config_map(custom)["data"] == {"slots": "7"}  # type: ignore[index]

    none = settings_with(templates={"semaphore_config_map": ""})
    assert "synchronization" not in _template(none, Stage.IMPLEMENTATION)["spec"]
    assert semaphore_config_map(none) is None
    assert "semaphore-configmap.yaml" not in {file.name for file in render_files(none)}


def test_retry_strategy() -> None:
    pod = _pod(_template(Settings(), Stage.PLANNING))
    assert pod["retryStrategy"] == {
        "limit": 2,
        "retryPolicy": "OnError",
        "backoff": {"duration": "30s", "factor": 2},
    }
    custom = settings_with(
        templates={
            "retry_limit": 5,
            "retry_policy": "OnFailure",
            "retry_backoff": "2m",
            "retry_backoff_factor": 3,
        }
    )
    assert _pod(_template(custom, Stage.PLANNING))["retryStrategy"] == {
        "limit": 5,
        "retryPolicy": "OnFailure",
        "backoff": {"duration": "2m", "factor": 3},
    }
    assert "retryStrategy" not in _pod(_template(settings_with(templates={"retry_limit": 0}), Stage.PLANNING))


@pytest.mark.parametrize(
    ("sections", "where"),
    [
        ({"templates": {"env": {"GREETING": "hello {{workflow.name}}"}}}, "env"),
        ({"argo": {"parameters": {"cluster": "{{workflow.uid}}"}}}, "arguments"),
        ({"argo": {"templates": {"planning": "plan-{{x}}"}}}, "metadata"),
    ],
)
def test_a_setting_that_argo_would_evaluate_is_refused(sections: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=rf"{where}.*Argo would evaluate"):
        render_files(settings_with(**sections))
