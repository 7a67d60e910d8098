"""``facteur templates render``: writes, checks (exit 1 naming the drift), JSON, settings errors.

The ``templates`` group is driven on its own; ``facteur`` adds it as ``facteur templates``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from facteur.cli.templates import app


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("FACTEUR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["render", *args], env=env)


def test_render_writes_then_check_passes(tmp_path: Path) -> None:
    result = run()
    assert result.exit_code == 0, result.output
    out = tmp_path / "deploy" / "argo"
    assert sorted(path.name for path in out.iterdir()) == [
        "kustomization.yaml",
        "semaphore-configmap.yaml",
        "workflowtemplate-implementation.yaml",
        "workflowtemplate-planning.yaml",
        "workflowtemplate-review.yaml",
    ]
    assert "written" in result.output

    again = run("--check")
    assert again.exit_code == 0, again.output
    assert "5 files match a fresh render" in again.output


def test_check_fails_naming_the_files_that_drifted(tmp_path: Path) -> None:
    assert run("--out", "argo").exit_code == 0
    assert run("--out", "argo", "--check").exit_code == 0

    result = run("--out", "argo", "--check", env={"FACTEUR_TEMPLATES__IMAGE": "registry.example/runner:2"})

    assert result.exit_code == 1
    for stage in ("planning", "implementation", "review"):
        assert f"workflowtemplate-{stage}.yaml differs from a fresh render" in result.output
    assert "semaphore-configmap.yaml" not in result.output
    assert "facteur templates render --out argo" in result.output
    assert "registry.example" not in (tmp_path / "argo" / "workflowtemplate-planning.yaml").read_text()


def test_json(tmp_path: Path) -> None:
    written = run("--out", "argo", "--json")
    assert written.exit_code == 0
    document = json.loads(written.stdout)
    assert document["check"] is False
    assert document["drift"] == []
    assert {entry["state"] for entry in document["files"]} == {"written"}

    (tmp_path / "argo" / "kustomization.yaml").unlink()
    checked = run("--out", "argo", "--check", "--json")
    assert checked.exit_code == 1
    document = json.loads(checked.stdout)
    assert document["drift"] == ["kustomization.yaml"]
    assert {"file": "kustomization.yaml", "state": "missing"} in document["files"]


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    result = run("--out", "argo", env={"FACTEUR_TEMPLATES__ENV__GREETING": "{{workflow.name}}"})
    assert result.exit_code == 2
    assert "Argo would evaluate" in result.output
    assert not (tmp_path / "argo").exists()

    bad = run("--out", "argo", env={"FACTEUR_TEMPLATES__SECRETS__GH_TOKEN": "no-key"})
    assert bad.exit_code == 2
    assert "templates.secrets" in bad.output
