"""The Store port: durable records of ideas, tasks, runs, events and deliveries.

Every method is one transaction. Adapters translate driver errors into :class:`facteur.errors.StoreError`
subclasses (:class:`facteur.errors.StoreUnavailable` when the database cannot be reached) and raise
:class:`facteur.errors.NotFound` for unknown ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from facteur.domain.events import Event, NewEvent
from facteur.domain.ideas import Idea, IdeaSource, IdeaState
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState


@dataclass(frozen=True, slots=True, kw_only=True)
class IdeaDraft:
    """An idea to create, or to find when one with the same source and source_ref exists."""

    id: uuid.UUID
    source: IdeaSource
    source_ref: str
    repository: str
    title: str
    initiator: str
    priority: int = 2
    spec: Mapping[str, Any] = field(default_factory=dict)
    state: IdeaState = IdeaState.REGISTERED


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskDraft:
    """A task to create, or to find when the idea already has one with this key."""

    id: uuid.UUID
    key: str
    title: str
    stage: Stage
    state: TaskState


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDraft:
    id: uuid.UUID
    stage: Stage
    delivery_id: str
    status: RunStatus
    executor: str | None
    workflow_name: str | None
    namespace: str | None
    event_body: bytes
    raw_event: bytes


@dataclass(frozen=True, slots=True)
class IngestIds:
    idea_id: uuid.UUID
    task_id: uuid.UUID
    run_id: uuid.UUID
    #: True when the idea did not exist before this delivery
    idea_created: bool


@dataclass(frozen=True, slots=True)
class IngestEffects:
    """What an accepted delivery leaves behind: the answer to give to its replays, and audit events."""

    response: Mapping[str, Any]
    events: list[NewEvent]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingest:
    """One external delivery that creates a run: inbox record, idea, task, run and events, all or nothing."""

    source: str
    delivery_id: str
    received_at: datetime
    idea: IdeaDraft
    task: TaskDraft
    run: RunDraft
    #: called inside the transaction once the ids are known
    effects: Callable[[IngestIds], IngestEffects]


@dataclass(frozen=True, slots=True)
class IngestResult:
    ids: IngestIds | None
    response: Mapping[str, Any]
    #: True when the delivery had been accepted before: nothing was written
    duplicate: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunUpdate:
    """A change to a run, applied only when the run is in one of ``expected`` (when given)."""

    status: RunStatus
    expected: Collection[RunStatus] = ()
    workflow_name: str | None = None
    namespace: str | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str | None = None


class Store(Protocol):
    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        ...

    async def schema_revision(self) -> str | None:
        """The applied migration revision (None for an empty database)."""
        ...

    async def find_delivery(self, source: str, delivery_id: str) -> Mapping[str, Any] | None:
        """The stored response of an accepted delivery."""
        ...

    async def ingest(self, ingest: Ingest) -> IngestResult: ...

    async def get_idea(self, idea_id: uuid.UUID) -> Idea: ...

    async def get_task(self, task_id: uuid.UUID) -> Task: ...

    async def get_run(self, run_id: uuid.UUID) -> Run: ...

    async def list_runs(
        self, *, statuses: Collection[RunStatus] = (), dispatched_only: bool = False, limit: int = 100
    ) -> list[Run]:
        """Runs, oldest first; ``dispatched_only`` keeps runs that have an executor."""
        ...

    async def run_payload(self, run_id: uuid.UUID) -> tuple[bytes, bytes]:
        """The run's (event_body, raw_event)."""
        ...

    async def update_run(self, run_id: uuid.UUID, update: RunUpdate, event: NewEvent | None) -> Run | None:
        """Apply the update and append the event; None (and nothing written) when the run was not in an
        expected status."""
        ...

    async def append_event(self, event: NewEvent) -> Event: ...

    async def list_events(
        self,
        *,
        idea_id: uuid.UUID | None = None,
        run_id: uuid.UUID | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[Event]: ...
