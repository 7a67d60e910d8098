"""The event a stage run works from: the JSON file its workflow was given (``--event FILE``).

Two shapes arrive. Runs the orchestrator creates carry the seeds' task fields (``stage``, ``repository``,
``base``, ``head``, ``issueNumber``, …) and a ``facteur`` section with the run's identity, where to report,
and the idea's spec, the task, the approved plan and the dependencies' branches. Runs started the
Froussard way (``/codex/tasks``, GitHub triggers) carry the seeds' task message, whose ``prompt`` was
written by intake, and the same ``facteur`` run section. Every field is checked here, and a wrong one is
named.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facteur.domain.ideas import is_repository
from facteur.domain.stage_prompts import Dependency, TaskInfo
from facteur.domain.stages import Stage
from facteur.errors import InvalidInput


class InvalidEvent(InvalidInput):
    """The stage's event file cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    run_id: uuid.UUID | None
    idea_id: uuid.UUID | None
    task_id: uuid.UUID | None
    workflow_name: str
    attempt: int
    callback_url: str | None
    callback_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewTarget:
    """A branch (and its pull request, when one is known) that a review run reviews."""

    key: str
    title: str
    branch: str
    pull_request: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StageEvent:
    stage: Stage
    repository: str
    base: str
    head: str
    issue_number: int
    issue_title: str
    issue_body: str
    issue_url: str
    #: the prompt intake wrote (Froussard-path runs); empty for the orchestrator's runs
    prompt: str
    run: RunInfo
    spec: Mapping[str, Any] = field(default_factory=dict)
    task: TaskInfo | None = None
    plan_markdown: str | None = None
    dependencies: tuple[Dependency, ...] = ()
    review_targets: tuple[ReviewTarget, ...] = ()
    pull_number: int = 0

    @property
    def orchestrated(self) -> bool:
        """A run the orchestrator created (its prompt is built here), not one intake wrote a prompt for."""
        return not self.prompt


def load_event(path: Path) -> StageEvent:
    """Read and check the event file; raise :class:`InvalidEvent` naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidEvent(f"event file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"event file {path} cannot be read: {exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"event file {path} is not JSON: {exc}") from None
    return parse_event(document)


def parse_event(document: Any) -> StageEvent:
    if not isinstance(document, Mapping):
        raise InvalidEvent("the event must be a JSON object")
    block = document.get("facteur")
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise InvalidEvent("field 'facteur' must be an object")
    raw_stage = _text(document, "stage", required=True)
    try:
        stage = Stage(raw_stage.lower().removeprefix("codex_task_stage_"))
    except ValueError:
        raise InvalidEvent(f"field 'stage' must name a stage, not {raw_stage!r}") from None
    repository = _text(document, "repository", required=True)
    if not is_repository(repository):
        raise InvalidEvent(f"field 'repository' must be owner/name, not {repository!r}")
    task = _task(block.get("task"))
    plan = block.get("plan")
    plan_markdown = None
    if isinstance(plan, Mapping):
        plan_markdown = _text(plan, "markdown") or None
    elif plan is not None:
        raise InvalidEvent("field 'facteur.plan' must be an object {version, markdown}")
    spec = block.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise InvalidEvent("field 'facteur.spec' must be an object")
    return StageEvent(
        stage=stage,
        repository=repository,
        base=_text(document, "base") or "main",
        head=_text(document, "head", required=True),
        issue_number=_count(document, "issueNumber"),
        issue_title=_text(document, "issueTitle"),
        issue_body=_text(document, "issueBody"),
        issue_url=_text(document, "issueUrl"),
        prompt=_text(document, "prompt"),
        run=_run(block, document),
        spec=dict(spec),
        task=task,
        plan_markdown=plan_markdown or (_text(document, "planCommentBody") or None),
        dependencies=tuple(_dependency(n, d) for n, d in enumerate(_list(block, "dependencies"))),
        review_targets=tuple(_target(n, t) for n, t in enumerate(_list(block, "targets"))),
        pull_number=_count(block, "pullNumber"),
    )


def _run(block: Mapping[str, Any], document: Mapping[str, Any]) -> RunInfo:
    callback_url = _text(block, "callbackUrl") or None
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise InvalidEvent(f"field 'facteur.callbackUrl' must be an http(s) URL, not {callback_url[:80]!r}")
    token = _text(block, "callbackToken") or None
    if callback_url is not None and token is None:
        raise InvalidEvent("field 'facteur.callbackToken' is required with 'facteur.callbackUrl'")
    attempt = block.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise InvalidEvent("field 'facteur.attempt' must be a whole number, 1 or more")
    return RunInfo(
        run_id=_uuid(block, "runId"),
        idea_id=_uuid(block, "ideaId") or _uuid(document, "ideaId"),
        task_id=_uuid(block, "taskId"),
        workflow_name=_text(block, "workflowName"),
        attempt=attempt,
        callback_url=callback_url,
        callback_token=token,
    )


def _task(value: Any) -> TaskInfo | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidEvent("field 'facteur.task' must be an object")
    where = "facteur.task"
    return TaskInfo(
        key=_text(value, "key", required=True, where=where),
        title=_text(value, "title", where=where),
        description=_text(value, "description", where=where),
        acceptance_criteria=_strings(value, "acceptanceCriteria", where),
        paths=_strings(value, "paths", where),
        depends_on=_strings(value, "dependsOn", where),
    )


def _dependency(number: int, value: Any) -> Dependency:
    where = f"facteur.dependencies[{number}]"
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"field {where!r} must be an object")
    return Dependency(
        key=_text(value, "key", required=True, where=where),
        title=_text(value, "title", where=where),
        branch=_text(value, "branch", required=True, where=where),
        summary=_text(value, "summary", where=where),
    )


def _target(number: int, value: Any) -> ReviewTarget:
    where = f"facteur.targets[{number}]"
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"field {where!r} must be an object")
    return ReviewTarget(
        key=_text(value, "key", required=True, where=where),
        title=_text(value, "title", where=where),
        branch=_text(value, "branch", required=True, where=where),
        pull_request=_text(value, "pullRequest", where=where) or None,
    )


def _list(block: Mapping[str, Any], name: str) -> list[Any]:
    value = block.get(name) or []
    if not isinstance(value, list):
        raise InvalidEvent(f"field 'facteur.{name}' must be a list")
    return value


def _text(block: Mapping[str, Any], name: str, *, required: bool = False, where: str = "") -> str:
    value = block.get(name)
    label = f"{where}.{name}" if where else name
    if value is None or value == "":
        if required:
            raise InvalidEvent(f"field {label!r} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(f"field {label!r} must be a string")
    return value


def _strings(block: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = block.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidEvent(f"field '{where}.{name}' must be a list of strings")
    return tuple(value)


def _count(block: Mapping[str, Any], name: str) -> int:
    value = block.get(name, 0)
    if isinstance(value, str) and value.isdigit():  # proto-JSON writes int64 as strings
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidEvent(f"field {name!r} must be a whole number, 0 or more")
    return value


def _uuid(block: Mapping[str, Any], name: str) -> uuid.UUID | None:
    value = block.get(name)
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidEvent(f"field {name!r} must be a UUID, not {str(value)[:80]!r}") from None
