"""The events handed to the runs the orchestrator creates (the ``eventBody`` of their workflow): what a stage
runner needs to plan an idea or implement one task of its plan, in the JSON shape of the seeds' codex task
(``stage``, ``repository``, ``base``, ``head``, ``issueNumber``, …) plus a ``facteur`` section with the
idea, the task, the approved plan and the dependencies' branches and summaries (the dispatcher adds the
run's identity, attempt and callback to it when it submits the run).

Branches are deterministic: ``<codex.branch_prefix><issue>-<task key>`` for ideas from a GitHub issue,
``facteur/idea-<8 chars of the idea id>-<task key>`` otherwise, so that a task's dependents know where its
work is before it is done.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from facteur.domain.ideas import Idea, IdeaSource
from facteur.domain.runs import RunStatus, workflow_name
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task
from facteur.store.port import ClaimCandidate, IdeaDetail, NewRun

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def issue_number(idea: Idea) -> int:
    """The GitHub issue of an idea from one (``owner/repo#42`` → 42), else 0."""
    if idea.source is not IdeaSource.GITHUB_ISSUE:
        return 0
    _, _, number = idea.source_ref.rpartition("#")
    return int(number) if number.isdigit() else 0


def task_branch(idea: Idea, key: str, *, prefix: str) -> str:
    part = _UNSAFE.sub("-", key).strip("-.") or "task"
    number = issue_number(idea)
    if number:
        return f"{prefix}{number}-{part}"
    return f"facteur/idea-{idea.id.hex[:8]}-{part}"


class RunBodies:
    """Builds the runs of plan tasks and planning tasks for one executor."""

    def __init__(
        self,
        *,
        executor: str,
        namespace: str,
        base_branch: str,
        branch_prefix: str,
        new_id: Callable[[], uuid.UUID],
    ) -> None:
        self._executor = executor
        self._namespace = namespace
        self._base = base_branch
        self._prefix = branch_prefix
        self._new_id = new_id

    def implementation(self, candidate: ClaimCandidate, now: datetime) -> NewRun:
        idea, task = candidate.idea, candidate.task
        attempt = candidate.runs + 1  # the run's number; the attempt budget is the task's own count
        spec = task_document(task)
        spec["dependsOn"] = [d.key for d in candidate.dependencies]
        body = self._common(idea, Stage.IMPLEMENTATION, head=task_branch(idea, task.key, prefix=self._prefix))
        body["facteur"] = {
            "task": spec,
            "plan": {"version": idea.plan_version, "markdown": candidate.plan_markdown},
            "dependencies": [
                {
                    "key": d.key,
                    "title": d.title,
                    "state": d.state.value,
                    "branch": d.branch or task_branch(idea, d.key, prefix=self._prefix),
                    "summary": d.summary,
                }
                for d in candidate.dependencies
            ],
        }
        return self._run(task.id, Stage.IMPLEMENTATION, body, attempt, now)

    def planning(
        self, idea: Idea, spec: Mapping[str, Any], task: Task, attempt: int, now: datetime
    ) -> NewRun:
        body = self._common(idea, Stage.PLANNING, head=task_branch(idea, "plan", prefix=self._prefix))
        body["facteur"] = {"spec": dict(spec)}
        return self._run(task.id, Stage.PLANNING, body, attempt, now)

    def review(
        self,
        idea: Idea,
        detail: IdeaDetail,
        task: Task,
        attempt: int,
        now: datetime,
        *,
        succeeded: Collection[uuid.UUID],
    ) -> NewRun:
        """The review run of an idea whose tasks are done: it reviews the branches of the ``succeeded`` tasks
        no other succeeded task builds on (each carries its dependencies' work), with their pull requests as
        the tasks' runs reported them."""
        version = idea.plan_version
        # the work that exists: succeeded tasks; a cancelled task's branch has nothing to review, and the
        # tasks it would have built on are reviewed themselves
        views = [
            v
            for v in detail.tasks
            if v.task.plan_version is not None and v.task.plan_version == version and v.task.id in succeeded
        ]
        built_on = {key for view in views for key in view.depends_on}
        targets = []
        for view in views:
            if view.task.key in built_on:
                continue
            runs = [r for r in detail.runs if r.task_id == view.task.id and r.status is RunStatus.SUCCEEDED]
            last = max(runs, key=lambda r: (r.attempt, r.created_at)) if runs else None
            targets.append(
                {
                    "key": view.task.key,
                    "title": view.task.title,
                    "branch": (last.branch if last else None)
                    or task_branch(idea, view.task.key, prefix=self._prefix),
                    "pullRequest": last.pull_request if last else None,
                }
            )
        head = targets[0]["branch"] if targets else task_branch(idea, "review", prefix=self._prefix)
        plan = next((p for p in detail.plans if p.version == version), None)
        body = self._common(idea, Stage.REVIEW, head=str(head))
        body["facteur"] = {
            "spec": dict(detail.spec),
            "targets": targets,
            "plan": {
                "version": version,
                "markdown": plan.markdown if plan else "",
            },
        }
        return self._run(task.id, Stage.REVIEW, body, attempt, now)

    def _common(self, idea: Idea, stage: Stage, *, head: str) -> dict[str, Any]:
        return {
            "stage": stage.value,
            "repository": idea.repository,
            "base": self._base,
            "head": head,
            "issueNumber": issue_number(idea),
            "issueTitle": idea.title,
            "ideaId": str(idea.id),
        }

    def _run(
        self, task_id: uuid.UUID, stage: Stage, body: dict[str, Any], attempt: int, now: datetime
    ) -> NewRun:
        run_id: uuid.UUID = self._new_id()
        encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return NewRun(
            id=run_id,
            task_id=task_id,
            stage=stage,
            delivery_id=f"facteur:{run_id}",
            executor=self._executor,
            workflow_name=workflow_name(stage, run_id, now),
            namespace=self._namespace,
            event_body=encoded,
            raw_event=encoded,
            attempt=attempt,
        )


def task_document(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.id),
        "key": task.key,
        "title": task.title,
        "description": task.description,
        "acceptanceCriteria": list(task.acceptance_criteria),
        "paths": list(task.paths),
        "heavy": task.heavy,
    }
