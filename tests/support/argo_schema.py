"""Validate Argo manifests the way the cluster would, without a cluster.

Two checks, both must pass:

* Argo's JSON schema (``schema.json``, draft 2020-12): types, enums, ``const`` apiVersion/kind, the shape of
  ``metadata`` (closed here: an unknown metadata field is an error). Quantities and int-or-strings, typed as
  strings there, also take integers here, as the API server does (``cpu: 4``);
* the CRD's ``openAPIV3Schema`` with every object that lists its ``properties`` closed
  (``additionalProperties: false``), so that an unknown or misspelt field is rejected as the API server's
  strict field validation would. Objects the CRD leaves open stay open: ``metadata`` (a bare
  ``type: object``, checked by the first schema), maps (``additionalProperties`` given) and
  ``x-kubernetes-preserve-unknown-fields`` nodes.

Plus the API server's own rules for names and labels, which neither schema states.

The fixtures live in ``../shared/fixtures/argo`` next to the repository. Without them the calling test is
skipped, or failed when ``CI=true``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from tests.support.services import SHARED, unavailable

ARGO_FIXTURES = SHARED / "fixtures" / "argo"

_JSON_SCHEMA = "schema.json"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
#: the JSON schema types these as strings, but the API server (and the CRD) also take integers: ``cpu: 4``
_INT_OR_STRING = (
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
)
_MAX_ERRORS = 20

#: Argo labels a workflow's pods with its name, so it refuses names longer than a label value
_MAX_WORKFLOW_NAME = 63
_MAX_OBJECT_NAME = 253
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_MAX_QUALIFIED_NAME = 63
_MAX_ANNOTATIONS_BYTES = 256 * 1024


def validate_workflow(manifest: Mapping[str, Any]) -> None:
    """Raise AssertionError listing every problem that would make the API server refuse this Workflow."""
    _validate(
        manifest,
        kind="Workflow",
        definition="io.argoproj.workflow.v1alpha1.Workflow",
        crd="argoproj.io_workflows.yaml",
        max_name=_MAX_WORKFLOW_NAME,
    )


def validate_workflow_template(manifest: Mapping[str, Any]) -> None:
    """Raise AssertionError listing every problem that would make the API server refuse this template."""
    _validate(
        manifest,
        kind="WorkflowTemplate",
        definition="io.argoproj.workflow.v1alpha1.WorkflowTemplate",
        crd="argoproj.io_workflowtemplates.yaml",
        max_name=_MAX_OBJECT_NAME,
    )


def _validate(manifest: Mapping[str, Any], *, kind: str, definition: str, crd: str, max_name: int) -> None:
    problems = [
        *(
            f"Argo JSON schema: {_describe(error)}"
            for error in _errors(_json_schema_validator(definition), manifest)
        ),
        *(f"CRD {crd}: {_describe(error)}" for error in _errors(_crd_validator(crd), manifest)),
        *(f"Kubernetes: {problem}" for problem in _metadata_problems(manifest, max_name)),
    ]
    if problems:
        shown = problems[:_MAX_ERRORS]
        more = [f"… and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
        raise AssertionError(f"not a valid {kind}:\n" + "\n".join(f"  - {line}" for line in [*shown, *more]))


def _errors(validator: Draft202012Validator, manifest: Mapping[str, Any]) -> Iterator[ValidationError]:
    # JSON schemas speak of JSON: round-trip so that tuples, subclasses of str and the like look as they would
    document = json.loads(json.dumps(manifest))
    yield from sorted(validator.iter_errors(document), key=lambda error: list(map(str, error.absolute_path)))


def _describe(error: ValidationError) -> str:
    message = error.message if len(error.message) <= 300 else error.message[:299] + "…"
    return f"{error.json_path}: {message}"


# --- the schemas, loaded once -----------------------------------------------------------------------------


def argo_fixtures() -> Path:
    """The Argo fixtures directory; skips the test (fails it when ``CI=true``) if it is missing."""
    if not (ARGO_FIXTURES / _JSON_SCHEMA).is_file():
        unavailable(
            f"the Argo schema fixtures are missing: {ARGO_FIXTURES} (clone ../shared beside the repository)"
        )
    return ARGO_FIXTURES


def _json_schema_validator(definition: str) -> Draft202012Validator:
    argo_fixtures()
    return _cached_json_schema_validator(definition)


def _crd_validator(crd: str) -> Draft202012Validator:
    argo_fixtures()
    return _cached_crd_validator(crd)


@functools.cache
def _json_schema_document() -> dict[str, Any]:
    with (ARGO_FIXTURES / _JSON_SCHEMA).open(encoding="utf-8") as file:
        document: dict[str, Any] = json.load(file)
    # the document's own root only says "one of the Argo kinds"; each check points at one definition instead
    document.pop("oneOf", None)
    document.pop("type", None)
    # metadata is a closed struct for the API server: a misspelt metadata field is a mistake worth catching
    _close(document["definitions"][_OBJECT_META])
    for name in _INT_OR_STRING:
        document["definitions"][name]["type"] = ["integer", "string"]
    return document


@functools.cache
def _cached_json_schema_validator(definition: str) -> Draft202012Validator:
    document = _json_schema_document()
    if definition not in document["definitions"]:
        raise KeyError(f"{definition} is not defined in {_JSON_SCHEMA}")
    # the whole document is the root resource, so that every "#/definitions/..." reference resolves in it
    return Draft202012Validator({**document, "$ref": f"#/definitions/{definition}"})


@functools.cache
def _cached_crd_validator(crd: str) -> Draft202012Validator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes: the C parser if present
    with (ARGO_FIXTURES / crd).open(encoding="utf-8") as file:
        document = yaml.load(file, Loader=loader)
    versions = {version["name"]: version for version in document["spec"]["versions"]}
    schema = copy.deepcopy(versions["v1alpha1"]["schema"]["openAPIV3Schema"])
    _close_objects(schema)
    return Draft202012Validator(schema)


def _close(schema: dict[str, Any]) -> None:
    schema.setdefault("additionalProperties", False)


def _close_objects(schema: Any) -> None:
    """Add ``additionalProperties: false`` to every object schema that lists its properties and does not say
    that it keeps unknown fields; walk only schema positions, so a property named like a keyword is safe."""
    if not isinstance(schema, dict):
        return
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        _close(schema)
    for keyword in ("properties", "patternProperties"):
        for child in schema.get(keyword, {}).values():
            _close_objects(child)
    for keyword in ("items", "additionalProperties", "not"):
        _close_objects(schema.get(keyword))
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(keyword, []):
            _close_objects(child)


# --- what the API server checks itself ------------------------------------------------------------------


def _metadata_problems(manifest: Mapping[str, Any], max_name: int) -> Iterator[str]:
    metadata = manifest.get("metadata")
    if not isinstance(metadata, Mapping):
        return  # the schemas report it
    name = metadata.get("name")
    generate_name = metadata.get("generateName")
    if not name and not generate_name:
        yield "metadata: name or generateName is required"
    if isinstance(name, str) and name:
        if len(name) > max_name:
            yield f"metadata.name: {name!r} is longer than {max_name} characters"
        if not _DNS_SUBDOMAIN.fullmatch(name):
            yield f"metadata.name: {name!r} is not a lower-case DNS name ([a-z0-9] and '-', '.')"
    labels = metadata.get("labels")
    if isinstance(labels, Mapping):
        for key, value in labels.items():
            yield from _key_problems("metadata.labels", key)
            if not isinstance(value, str):
                continue  # the schemas report it
            if len(value) > _MAX_QUALIFIED_NAME or (value and not _QUALIFIED_NAME.fullmatch(value)):
                yield f"metadata.labels[{key!r}]: {value!r} is not a valid label value"
    annotations = metadata.get("annotations")
    if isinstance(annotations, Mapping):
        for key in annotations:
            yield from _key_problems("metadata.annotations", key)
        size = sum(len(str(key).encode()) + len(str(value).encode()) for key, value in annotations.items())
        if size > _MAX_ANNOTATIONS_BYTES:
            yield f"metadata.annotations: {size} bytes, more than the {_MAX_ANNOTATIONS_BYTES} allowed"


def _key_problems(where: str, key: object) -> Iterator[str]:
    """Label and annotation keys: ``[prefix/]name``, prefix a DNS subdomain, name a qualified name."""
    if not isinstance(key, str):
        yield f"{where}: key {key!r} is not a string"
        return
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > _MAX_OBJECT_NAME or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        yield f"{where}: key {key!r} has an invalid prefix"
    if len(name) > _MAX_QUALIFIED_NAME or not _QUALIFIED_NAME.fullmatch(name):
        yield f"{where}: key {key!r} is not a valid qualified name"
