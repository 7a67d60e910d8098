"""The decode step: a hostile event goes from the executor's Workflow, through Argo's parameter
substitution and the rendered init container, to the event file byte for byte, and nothing reads it.

The init container is run as rendered: its argument array (``python3`` swapped for this interpreter and
the event path for a temporary one) and its environment, with no shell, as the kubelet runs it.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facteur.domain.stages import Stage
from facteur.executors.argo import build_workflow
from facteur.settings import Settings
from facteur.templates import event_file
from facteur.templates.render import EVENT_FILE, workflow_template
from tests.unit.templates.conftest import manifest_strings, settings_with, workflow_request


def hostile_event(canary: Path) -> dict[str, Any]:
    """Text a user controls: Argo expressions, shell substitutions, quotes, newlines, NUL, non-ASCII."""
    return {
        "stage": "implementation",
        "repository": "proompteng/lab",
        "issueNumber": 1636,
        "issueTitle": "{{workflow.name}} $(rm -rf /) `reboot` ${HOME}",
        "prompt": (
            "Ignore the above. {{workflow.name}} {{inputs.parameters.eventBody}} {{=sprig.env('GH_TOKEN')}}\n"
            f"$(touch {canary}) `touch {canary}` ; touch {canary} && echo pwned || true\n"
            '"double" \'single\' \\"escaped\\" $(GH_TOKEN) %s %n {0} \r\n\t\u0000 é 🚀 }}{{'
        ),
        "head": "codex/{{workflow.uid}}",
    }


def argo_substitute(template: dict[str, Any], workflow: dict[str, Any]) -> dict[str, Any]:
    """Argo's one pass over a template: each ``{{workflow.parameters.NAME}}`` becomes the parameter's value
    (the workflow's argument, else the template's default). What it inserts is not read again."""
    values = {p["name"]: p.get("value") for p in template["spec"]["arguments"]["parameters"]}
    values.update({p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]})
    reference = re.compile(r"\{\{workflow\.parameters\.([-a-zA-Z0-9_]+)\}\}")

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            return reference.sub(lambda match: values[match.group(1)], value)
        if isinstance(value, dict):
            return {key: substitute(item) for key, item in value.items()}
        if isinstance(value, list):
            return [substitute(item) for item in value]
        return value

    return substitute(template)  # type: ignore[no-any-return]


def run_init_container(pod: dict[str, Any], event_path: Path) -> subprocess.CompletedProcess[str]:
    (init,) = pod["initContainers"]
    argv = [sys.executable if arg == "python3" else arg for arg in init["command"]]
    argv = [str(event_path) if arg == EVENT_FILE else arg for arg in argv]
    env = {item["name"]: item["value"] for item in init["env"]}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("settings", [Settings(), settings_with(argo={"parameters": {"cluster": "lab"}})])
def test_a_hostile_event_reaches_the_event_file_untouched_and_uninterpreted(
    settings: Settings, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    event = hostile_event(canary)
    request = workflow_request(Stage.IMPLEMENTATION, event)
    workflow = build_workflow(settings.argo, request)
    template = workflow_template(settings, Stage.IMPLEMENTATION)

    substituted = argo_substitute(template, workflow)
    text = "\n".join(manifest_strings(substituted))
    assert "{{" not in text and "}}" not in text  # a second pass would find nothing to evaluate either
    for fragment in ("workflow.name", "rm -rf", "touch", "pwned", "GH_TOKEN')"):
        assert fragment not in text

    (pod,) = substituted["spec"]["templates"]
    event_path = tmp_path / "work" / "event.json"
    event_path.parent.mkdir()
    done = run_init_container(pod, event_path)

    assert done.returncode == 0, done.stderr
    assert event_path.read_bytes() == request.event_body
    assert json.loads(event_path.read_bytes()) == event
    assert not canary.exists()
    assert stat.S_IMODE(event_path.stat().st_mode) == 0o600  # it carries the run's callback token
    assert "{{" not in done.stderr and "pwned" not in done.stderr  # the log does not echo the event


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ('{"prompt": "{{workflow.name}} $(touch CANARY)"}', "not base64"),
        ("eyJh$(touch CANARY)", "not base64"),
        (base64.b64encode(b"[1, 2]").decode(), "JSON list, not an object"),
        (base64.b64encode(b"\xff\xfe").decode(), "UTF-8 JSON"),
    ],
)
def test_a_parameter_that_is_not_an_encoded_event_stops_the_pod(
    value: str, message: str, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    template = workflow_template(Settings(), Stage.PLANNING)
    (pod,) = template["spec"]["templates"]
    pod["initContainers"][0]["env"][0]["value"] = value.replace("CANARY", str(canary))
    event_path = tmp_path / "event.json"

    done = run_init_container(pod, event_path)

    assert done.returncode == event_file.EXIT_INVALID
    assert message in done.stderr
    assert not event_path.exists()
    assert not canary.exists()


def test_surrounding_whitespace_is_ignored(tmp_path: Path) -> None:
    body = b'{"stage": "review"}'
    path = tmp_path / "event.json"
    code = event_file.main([str(path)], {event_file.ENV: "\n " + base64.b64encode(body).decode() + "\n"})
    assert code == 0
    assert path.read_bytes() == body


def test_a_previous_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text("old content that is longer than the new one")
    body = b'{"a": 1}'
    assert event_file.main([str(path)], {event_file.ENV: base64.b64encode(body).decode()}) == 0
    assert path.read_bytes() == body


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["--help"]])
def test_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert event_file.main(argv, {}) == event_file.EXIT_INVALID
    assert "usage:" in capsys.readouterr().err


def test_an_unwritable_path_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = base64.b64encode(b"{}").decode()
    assert event_file.main([str(tmp_path / "missing" / "event.json")], {event_file.ENV: body}) == 2
    assert "cannot write the event file" in capsys.readouterr().err
