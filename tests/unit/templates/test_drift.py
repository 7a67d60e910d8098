"""The committed deploy/argo files are what ``facteur templates render`` makes of the default settings;
``check`` finds a file that differs, is missing or is no longer rendered."""

from __future__ import annotations

import shutil
from pathlib import Path

from facteur.settings import Settings
from facteur.templates.files import HEADER, FileState, check, render_files, write
from tests.support.argo_schema import validate_workflow_template
from tests.support.services import REPO_ROOT
from tests.unit.templates.conftest import settings_with

DEPLOY_ARGO = REPO_ROOT / "deploy" / "argo"


def test_the_committed_templates_match_a_fresh_render() -> None:
    results = check(DEPLOY_ARGO, render_files(Settings()))
    drift = [f"{result.name}: {result.state.value}" for result in results if result.drift]
    assert not drift, (
        "deploy/argo differs from a fresh render; run `facteur templates render` (default settings, no "
        f"FACTEUR_* variables) and commit the result: {drift}"
    )


def test_the_committed_templates_are_valid_for_argo() -> None:
    import yaml

    paths = sorted(DEPLOY_ARGO.glob("workflowtemplate-*.yaml"))
    assert [path.name for path in paths] == [
        "workflowtemplate-implementation.yaml",
        "workflowtemplate-planning.yaml",
        "workflowtemplate-review.yaml",
    ]
    for path in paths:
        validate_workflow_template(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_check_names_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "argo"
    shutil.copytree(DEPLOY_ARGO, out)
    files = render_files(Settings())
    assert not [result for result in check(out, files) if result.drift]

    planning = out / "workflowtemplate-planning.yaml"
    planning.write_text(
        planning.read_text().replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: Always")
    )
    (out / "semaphore-configmap.yaml").unlink()
    (out / "workflowtemplate-old.yaml").write_text(HEADER + "kind: WorkflowTemplate\n")
    (out / "notes.yaml").write_text("# someone else's file\n")

    states = {result.name: result.state for result in check(out, files) if result.drift}
    assert states == {
        "workflowtemplate-planning.yaml": FileState.DIFFERS,
        "semaphore-configmap.yaml": FileState.MISSING,
        "workflowtemplate-old.yaml": FileState.STALE,
    }


def test_write_rewrites_what_changed_and_removes_what_is_no_longer_rendered(tmp_path: Path) -> None:
    out = tmp_path / "argo"
    first = write(out, render_files(Settings()))
    assert {result.state for result in first} == {FileState.WRITTEN}
    assert {result.state for result in write(out, render_files(Settings()))} == {FileState.UNCHANGED}
    (out / "notes.yaml").write_text("# someone else's file\n")

    without_semaphore = render_files(settings_with(templates={"semaphore_config_map": ""}))
    states = {result.name: result.state for result in write(out, without_semaphore)}
    assert states["semaphore-configmap.yaml"] is FileState.REMOVED
    assert states["kustomization.yaml"] is FileState.WRITTEN
    assert not (out / "semaphore-configmap.yaml").exists()
    assert (out / "notes.yaml").exists()
    assert not [result for result in check(out, without_semaphore) if result.drift]
