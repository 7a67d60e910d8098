"""The Argo manifest validator can fail: it rejects unknown fields, type errors and bad metadata."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.support import argo_schema
from tests.support.argo_schema import validate_workflow, validate_workflow_template


def _workflow() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "codex-planning-20261121-134600-0123abcd",
            "namespace": "argo-workflows",
            "labels": {"codex.stage": "planning", "app.kubernetes.io/part-of": "facteur"},
            "annotations": {"codex.repository": "proompteng/lab", "codex.head": "feature/{{x}}"},
        },
        "spec": {
            "workflowTemplateRef": {"name": "github-codex-planning"},
            "serviceAccountName": "argo-workflows-workflow",
            "arguments": {"parameters": [{"name": "eventBody", "value": "e30="}]},
        },
    }


def _template() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "github-codex-planning", "labels": {"codex.stage": "planning"}},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "eventBody", "value": "e30="}]},
            "templates": [
                {
                    "name": "main",
                    "inputs": {"parameters": [{"name": "eventBody"}]},
                    "container": {
                        "image": "codex-universal:latest",
                        "command": ["facteur", "stage", "planning"],
                        "resources": {"requests": {"cpu": 4, "memory": "8Gi"}},
                    },
                }
            ],
        },
    }


def _rejected(manifest: dict[str, Any], *, template: bool = False) -> str:
    with pytest.raises(AssertionError) as caught:
        (validate_workflow_template if template else validate_workflow)(manifest)
    return str(caught.value)


def test_a_plain_workflow_is_valid() -> None:
    validate_workflow(_workflow())


def test_a_plain_workflow_template_is_valid() -> None:
    validate_workflow_template(_template())


def test_an_unknown_spec_field_is_rejected_by_the_closed_crd() -> None:
    manifest = _workflow()
    manifest["spec"]["workflowTemplateRefs"] = {"name": "github-codex-planning"}

    message = _rejected(manifest)

    assert "CRD argoproj.io_workflows.yaml: $.spec: Additional properties are not allowed" in message
    assert "'workflowTemplateRefs' was unexpected" in message
    # Argo's JSON schema alone lets it through: the CRD check is what catches unknown fields
    assert "Argo JSON schema" not in message


def test_an_unknown_nested_field_is_rejected() -> None:
    manifest = _workflow()
    manifest["spec"]["arguments"]["parameters"][0]["valu"] = "e30="

    assert "$.spec.arguments.parameters[0]: Additional properties" in _rejected(manifest)


def test_a_type_error_is_rejected_by_both_schemas() -> None:
    manifest = _workflow()
    manifest["spec"]["arguments"]["parameters"] = "eventBody=e30="

    message = _rejected(manifest)

    assert "Argo JSON schema: $.spec.arguments.parameters: 'eventBody=e30=' is not of type 'array'" in message
    assert (
        "CRD argoproj.io_workflows.yaml: $.spec.arguments.parameters: 'eventBody=e30=' is not of type"
        in message
    )


def test_a_parameter_value_must_be_a_string() -> None:
    manifest = _workflow()
    manifest["spec"]["arguments"]["parameters"][0]["value"] = 42

    assert "$.spec.arguments.parameters[0].value: 42 is not of type 'string'" in _rejected(manifest)


def test_the_kind_and_api_version_are_checked() -> None:
    manifest = _workflow()
    manifest["kind"] = "WorkflowTemplate"
    manifest["apiVersion"] = "argoproj.io/v1"

    message = _rejected(manifest)

    assert "$.kind: 'Workflow' was expected" in message
    assert "$.apiVersion: 'argoproj.io/v1alpha1' was expected" in message


def test_normal_metadata_fields_are_accepted() -> None:
    manifest = _workflow()
    manifest["metadata"].update(
        {
            "uid": "6f1c6f7e-3b1e-4c55-9c1e-2b8f0f6d9a10",
            "resourceVersion": "123",
            "generation": 1,
            "creationTimestamp": "2026-11-21T13:46:00Z",
            "finalizers": ["workflows.argoproj.io/artifact-gc"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "0a6e2f"},
            ],
        }
    )
    validate_workflow(manifest)


def test_an_unknown_metadata_field_is_rejected() -> None:
    manifest = _workflow()
    manifest["metadata"]["label"] = {"codex.stage": "planning"}

    assert "$.metadata: Additional properties are not allowed ('label' was unexpected)" in _rejected(manifest)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "Codex_Planning"}, "metadata.name: 'Codex_Planning' is not a lower-case DNS name"),
        ({"name": "codex-" + "x" * 60}, "is longer than 63 characters"),
        ({"name": None}, "metadata: name or generateName is required"),
        ({"labels": {"codex.stage": "x" * 64}}, "is not a valid label value"),
        ({"labels": {"codex.stage": "-planning"}}, "is not a valid label value"),
        ({"labels": {"codex stage": "planning"}}, "key 'codex stage' is not a valid qualified name"),
        ({"labels": {"Example.COM/stage": "planning"}}, "key 'Example.COM/stage' has an invalid prefix"),
        ({"annotations": {"codex/": "x"}}, "key 'codex/' is not a valid qualified name"),
    ],
)
def test_kubernetes_metadata_rules_are_checked(change: dict[str, Any], expected: str) -> None:
    manifest = _workflow()
    for key, value in change.items():
        if value is None:
            del manifest["metadata"][key]
        else:
            manifest["metadata"][key] = value

    assert expected in _rejected(manifest)


def test_an_empty_label_value_is_valid() -> None:
    manifest = _workflow()
    manifest["metadata"]["labels"]["codex.head"] = ""
    validate_workflow(manifest)


def test_open_maps_stay_open() -> None:
    manifest = _workflow()
    manifest["spec"]["podMetadata"] = {"labels": {"any.label/name": "value"}, "annotations": {"a": "b"}}
    manifest["spec"]["nodeSelector"] = {"kubernetes.io/arch": "amd64"}
    validate_workflow(manifest)


def test_workflow_templates_reject_unknown_fields_too() -> None:
    manifest = _template()
    manifest["spec"]["templates"][0]["container"]["imagePullPolice"] = "Always"

    message = _rejected(manifest, template=True)

    assert "not a valid WorkflowTemplate" in message
    assert "'imagePullPolice' was unexpected" in message


def test_a_workflow_is_not_a_workflow_template() -> None:
    assert "$.kind: 'WorkflowTemplate' was expected" in _rejected(_workflow(), template=True)


def test_validation_does_not_modify_the_manifest() -> None:
    manifest = _workflow()
    before = copy.deepcopy(manifest)
    validate_workflow(manifest)
    assert manifest == before


def test_integer_quantities_are_accepted_as_the_api_server_does() -> None:
    manifest = _template()
    container = manifest["spec"]["templates"][0]["container"]
    container["resources"] = {"requests": {"cpu": 4, "memory": "8Gi"}, "limits": {"cpu": "6"}}
    validate_workflow_template(manifest)

    container["resources"]["limits"]["cpu"] = [6]
    assert "$.spec.templates[0].container.resources.limits.cpu" in _rejected(manifest, template=True)


def test_missing_fixtures_skip_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(argo_schema, "ARGO_FIXTURES", tmp_path / "missing")
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="the Argo schema fixtures are missing"):
        validate_workflow(_workflow())


def test_missing_fixtures_fail_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(argo_schema, "ARGO_FIXTURES", tmp_path / "missing")
    monkeypatch.setenv("CI", "true")

    with pytest.raises(pytest.fail.Exception, match="the Argo schema fixtures are missing"):
        validate_workflow(_workflow())
