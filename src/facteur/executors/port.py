"""The Executor port."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from facteur.domain.runs import RunStatus
from facteur.domain.stages import Stage


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRequest:
    """Everything an executor needs to start the workflow of one run."""

    run_id: uuid.UUID
    idea_id: uuid.UUID
    task_id: uuid.UUID
    stage: Stage
    #: deterministic (see :func:`facteur.domain.runs.workflow_name`): a resubmission meets the first workflow
    name: str
    created_at: datetime
    #: the JSON event handed to the stage runner (``eventBody``)
    event_body: bytes
    #: the payload as it was received (``rawEvent``)
    raw_event: bytes
    repository: str
    issue_number: int
    head: str = ""
    base: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """The identity of a submitted workflow."""

    executor: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Submission:
    ref: WorkflowRef
    #: False when the workflow already existed (a resubmission of the same run)
    created: bool


class WorkflowPhase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: it stopped without finishing (its process or pod vanished)
    LOST = "lost"
    #: the executor has no such workflow
    NOT_FOUND = "not_found"

    def run_status(self) -> RunStatus:
        return _RUN_STATUS[self]


_RUN_STATUS = {
    WorkflowPhase.PENDING: RunStatus.SUBMITTED,
    WorkflowPhase.RUNNING: RunStatus.RUNNING,
    WorkflowPhase.SUCCEEDED: RunStatus.SUCCEEDED,
    WorkflowPhase.FAILED: RunStatus.FAILED,
    WorkflowPhase.CANCELLED: RunStatus.CANCELLED,
    WorkflowPhase.LOST: RunStatus.LOST,
    WorkflowPhase.NOT_FOUND: RunStatus.LOST,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStatus:
    phase: WorkflowPhase
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    details: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    """Starts, observes and stops the workflow of a run.

    Adapters translate their driver's errors into :class:`facteur.errors.ExecutorError` (or
    :class:`facteur.errors.ExecutorUnavailable` when the backend cannot be reached).
    """

    @property
    def kind(self) -> str:
        """``local``, ``argo`` or ``none``."""
        ...

    @property
    def namespace(self) -> str:
        """Where this executor's workflows live (the Kubernetes namespace for Argo)."""
        ...

    async def submit(self, request: WorkflowRequest) -> Submission:
        """Start the workflow; submitting the same request again returns the first workflow."""
        ...

    async def status(self, ref: WorkflowRef) -> WorkflowStatus:
        """The workflow's phase now."""
        ...

    async def cancel(self, ref: WorkflowRef) -> None:
        """Stop the workflow; cancelling a finished or unknown workflow is not an error."""
        ...

    async def aclose(self) -> None:
        """Release connections and stop background work."""
        ...
