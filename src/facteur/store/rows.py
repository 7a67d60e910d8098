"""Conversions between table rows and domain records (shared by the SQL adapters)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from facteur.domain.events import Event
from facteur.domain.ideas import Idea, IdeaSource, IdeaState
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState

if TYPE_CHECKING:
    import uuid

    from facteur.store.port import IdeaDraft, NewRun


def idea_from_row(row: Any) -> Idea:
    return Idea(
        id=row.id,
        source=IdeaSource(row.source),
        source_ref=row.source_ref,
        repository=row.repository,
        title=row.title,
        priority=row.priority,
        state=IdeaState(row.state),
        paused=row.paused,
        initiator=row.initiator,
        created_at=row.created_at,
        updated_at=row.updated_at,
        plan_version=row.plan_version,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cost_usd=row.cost_usd,
    )


def new_idea(draft: IdeaDraft, at: datetime, *, plan_version: int | None = None) -> Idea:
    """The idea a draft becomes when it is created at ``at`` (what the row then holds)."""
    return Idea(
        id=draft.id,
        source=draft.source,
        source_ref=draft.source_ref,
        repository=draft.repository,
        title=draft.title,
        priority=draft.priority,
        state=draft.state,
        paused=False,
        initiator=draft.initiator,
        created_at=at,
        updated_at=at,
        plan_version=plan_version,
    )


def task_from_row(row: Any) -> Task:
    return Task(
        id=row.id,
        idea_id=row.idea_id,
        key=row.key,
        title=row.title,
        stage=row.stage,
        state=TaskState(row.state),
        attempts=row.attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        description=row.description,
        acceptance_criteria=tuple(row.acceptance_criteria or ()),
        paths=tuple(row.paths or ()),
        heavy=bool(row.heavy),
        plan_version=row.plan_version,
        position=row.position,
        not_before=row.not_before,
        claimed_by=row.claimed_by,
        claim_expires_at=row.claim_expires_at,
        priority=row.priority,
    )


def run_from_row(row: Any) -> Run:
    return Run(
        id=row.id,
        idea_id=row.idea_id,
        task_id=row.task_id,
        stage=Stage(row.stage),
        delivery_id=row.delivery_id,
        status=RunStatus(row.status),
        executor=row.executor,
        workflow_name=row.workflow_name,
        namespace=row.namespace,
        created_at=row.created_at,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
        detail=row.detail,
        attempt=row.attempt,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cost_usd=row.cost_usd,
        summary=row.summary,
        artifacts=row.artifacts,
        pull_request=row.pull_request,
        branch=row.branch,
    )


def new_run(new: NewRun, idea_id: uuid.UUID, at: datetime) -> Run:
    """The run a :class:`NewRun` becomes when it is created at ``at`` (``queued``)."""
    return Run(
        id=new.id,
        idea_id=idea_id,
        task_id=new.task_id,
        stage=new.stage,
        delivery_id=new.delivery_id,
        status=RunStatus.QUEUED,
        executor=new.executor,
        workflow_name=new.workflow_name,
        namespace=new.namespace,
        created_at=at,
        submitted_at=None,
        finished_at=None,
        detail=None,
        attempt=new.attempt,
    )


def event_from_row(row: Any) -> Event:
    return Event(
        seq=row.seq,
        kind=row.kind,
        actor=row.actor,
        payload=row.payload,
        idea_id=row.idea_id,
        task_id=row.task_id,
        run_id=row.run_id,
        created_at=row.created_at,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
