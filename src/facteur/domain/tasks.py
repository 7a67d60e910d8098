"""Tasks: the nodes of an idea's DAG."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: uuid.UUID
    idea_id: uuid.UUID
    #: unique within the idea: a plan task key, or the stage name for stage-level tasks
    key: str
    title: str
    stage: str
    state: TaskState
    attempts: int
    created_at: datetime
    updated_at: datetime
    # from the plan (stage-level tasks keep the defaults)
    description: str = ""
    acceptance_criteria: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    heavy: bool = False
    plan_version: int | None = None
    #: the task's place in its plan
    position: int | None = None
    #: a failed task is not ready again before then (back-off)
    not_before: datetime | None = None
    #: the scheduler replica that claimed it, and until when the claim holds
    claimed_by: str | None = None
    claim_expires_at: datetime | None = None
    #: its idea's priority (0 highest), copied so that the scheduler orders ready tasks by an index
    priority: int = 2
