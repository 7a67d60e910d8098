"""The rendered files: their text, writing them to a directory, and comparing a directory with them.

Each file starts with :data:`HEADER`, which also marks it as rendered: a file of the directory that carries
it but is no longer rendered (a semaphore turned off, a stage dropped from ``argo.templates``) is stale;
``write`` removes it and ``check`` reports it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from facteur.settings import Settings
from facteur.templates.render import semaphore_config_map, stages, workflow_template

HEADER: Final = (
    "# Rendered by `facteur templates render` from the templates.* and argo.* settings.\n"
    "# Do not edit: change the settings and render again (docs/templates.md).\n"
)
SEMAPHORE_FILE: Final = "semaphore-configmap.yaml"
KUSTOMIZATION_FILE: Final = "kustomization.yaml"


def template_file(stage: str) -> str:
    return f"workflowtemplate-{stage}.yaml"


@dataclass(frozen=True, slots=True)
class RenderedFile:
    name: str
    text: str


class FileState(enum.StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    #: found by ``check``
    DIFFERS = "differs"
    MISSING = "missing"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class FileResult:
    name: str
    state: FileState

    @property
    def drift(self) -> bool:
        return self.state in {FileState.DIFFERS, FileState.MISSING, FileState.STALE}


def render_files(settings: Settings) -> list[RenderedFile]:
    """Every file of the output directory, in a fixed order, with a fixed text for given settings."""
    files = [
        RenderedFile(template_file(stage.value), _yaml(workflow_template(settings, stage)))
        for stage in stages(settings)
    ]
    semaphore = semaphore_config_map(settings)
    if semaphore is not None:
        files.append(RenderedFile(SEMAPHORE_FILE, _yaml(semaphore)))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [file.name for file in files],
    }
    files.append(RenderedFile(KUSTOMIZATION_FILE, _yaml(kustomization)))
    return files


def write(out: Path, files: list[RenderedFile]) -> list[FileResult]:
    """Write the files whose text changed and remove stale rendered files."""
    out.mkdir(parents=True, exist_ok=True)
    results: list[FileResult] = []
    for file in files:
        path = out / file.name
        if _read(path) == file.text:
            results.append(FileResult(file.name, FileState.UNCHANGED))
            continue
        path.write_text(file.text, encoding="utf-8")
        results.append(FileResult(file.name, FileState.WRITTEN))
    for name in _stale(out, files):
        (out / name).unlink()
        results.append(FileResult(name, FileState.REMOVED))
    return results


def check(out: Path, files: list[RenderedFile]) -> list[FileResult]:
    """How the directory compares with the files: unchanged, differs, missing, or stale."""
    results: list[FileResult] = []
    for file in files:
        found = _read(out / file.name)
        if found is None:
            state = FileState.MISSING
        elif found != file.text:
            state = FileState.DIFFERS
        else:
            state = FileState.UNCHANGED
        results.append(FileResult(file.name, state))
    results.extend(FileResult(name, FileState.STALE) for name in _stale(out, files))
    return results


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return ""  # not what would be rendered: it differs


def _stale(out: Path, files: list[RenderedFile]) -> list[str]:
    """Rendered files (they carry the header) in ``out`` that are not rendered any more."""
    if not out.is_dir():
        return []
    names = {file.name for file in files}
    return sorted(
        path.name
        for path in out.glob("*.yaml")
        if path.name not in names and path.is_file() and (_read(path) or "").startswith(HEADER)
    )


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, no anchors, no line folding: stable, diff-friendly
    text."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value used twice is written twice, never as an anchor


def _yaml(document: dict[str, Any]) -> str:
    body = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
    return HEADER + body
