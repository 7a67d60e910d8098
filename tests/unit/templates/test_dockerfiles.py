"""deploy/docker: each Dockerfile copies only files that exist and that its ignore file lets through, and
ends as a non-root user; the Facteur image serves, the agent runner carries what a stage pod needs.
Nothing is built here: these read the Dockerfiles."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from facteur.settings import Settings
from tests.support.services import REPO_ROOT

DOCKER = REPO_ROOT / "deploy" / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.agent-runner"]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """The instructions, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    result = []
    for text in joined:
        keyword, _, arguments = text.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


def final_stage(path: Path) -> list[Instruction]:
    steps = instructions(path)
    last_from = max(index for index, step in enumerate(steps) if step.keyword == "FROM")
    return steps[last_from:]


def copied_sources(path: Path) -> list[str]:
    """What the COPY instructions take from the build context (not from another stage)."""
    sources: list[str] = []
    for step in instructions(path):
        if step.keyword not in {"COPY", "ADD"}:
            continue
        words = step.arguments.split()
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def ignored(path: Path, source: str) -> bool:
    """Whether the Dockerfile's own ignore file (``<Dockerfile>.dockerignore``) keeps ``source`` out of the
    build context: its patterns in order, the last match wins, ``!`` lets through."""
    rules = (DOCKER / f"{path.name}.dockerignore").read_text(encoding="utf-8").splitlines()
    excluded = False
    for rule in (line.strip() for line in rules):
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(source.rstrip("/"), pattern):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists_and_reaches_the_build_context(name: str) -> None:
    path = DOCKER / name
    sources = copied_sources(path)
    assert sources, f"{name} copies nothing from the repository"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"{name} copies {source}, which is not in the repository"
        assert not ignored(path, source), f"{name} copies {source}, which {name}.dockerignore leaves out"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_as_a_non_root_user(name: str) -> None:
    users = [step.arguments for step in final_stage(DOCKER / name) if step.keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER, so it runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}
    assert group not in {"root", "0"}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_facteur_is_installed_from_the_lock_file(name: str) -> None:
    text = (DOCKER / name).read_text(encoding="utf-8")
    assert "uv sync --frozen --no-dev --no-editable" in text
    assert "COPY --from=build /opt/facteur /opt/facteur" in text
    assert re.search(r"ENV PATH=/opt/facteur/bin:\$PATH", text)


def test_the_facteur_image_serves_on_python_3_11_slim() -> None:
    steps = instructions(DOCKER / "Dockerfile")
    assert Instruction("ARG", "PYTHON_IMAGE=python:3.11-slim") in steps
    final = final_stage(DOCKER / "Dockerfile")
    assert final[0] == Instruction("FROM", "${PYTHON_IMAGE}")
    entrypoint = [s.arguments for s in final if s.keyword == "ENTRYPOINT"]
    command = [s.arguments for s in final if s.keyword == "CMD"]
    assert entrypoint[-1] == '["facteur"]'
    assert command[-1] == '["serve"]'


def test_the_agent_runner_has_python_git_node_and_codex_as_the_templates_user() -> None:
    path = DOCKER / "Dockerfile.agent-runner"
    text = path.read_text(encoding="utf-8")
    final = " ".join(f"{s.keyword} {s.arguments}" for s in final_stage(path))
    assert re.search(r"ARG NODE_IMAGE=node:\d+-bookworm-slim", text)  # bookworm's python3 is 3.11
    assert re.search(r"apt-get install [^&]*\bpython3\b[^&]*\bgit\b", final)
    assert re.search(r'npm install --global "@openai/codex@\$\{CODEX_VERSION\}"', final)
    assert re.search(r"ARG CODEX_VERSION=\d+\.\d+\.\d+", final)
    uid = Settings().templates.run_as_user
    assert f"--uid {uid} --gid {uid}" in final
    assert f"USER {uid}:{uid}" in final
    # the directories the WorkflowTemplates mount exist and belong to that user
    assert f"chown {uid}:{uid} /work /workspace" in final


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_ignore_file_sends_only_what_the_build_needs(name: str) -> None:
    path = DOCKER / name
    for kept in ("pyproject.toml", "uv.lock", "README.md", "src"):
        assert not ignored(path, kept)
    for left in (".venv", ".git", "tests", "deploy", "docs"):
        assert ignored(path, left)
