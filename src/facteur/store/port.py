"""The Store port: durable records of ideas, tasks, runs, events and deliveries.

Every method is one transaction. Adapters translate driver errors into :class:`facteur.errors.StoreError`
subclasses (:class:`facteur.errors.StoreUnavailable` when the database cannot be reached) and raise
:class:`facteur.errors.NotFound` for unknown ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from facteur.bus.port import Message
from facteur.domain.events import Event, NewEvent
from facteur.domain.ideas import Idea, IdeaSource, IdeaState
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState
from facteur.errors import StoreError


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
    #: published through the outbox, in the same transaction
    messages: list[Message] = field(default_factory=list)


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
    #: further inbox keys (source, delivery id) recorded with the same answer; one recorded before is kept
    aliases: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True)
class IngestResult:
    ids: IngestIds | None
    response: Mapping[str, Any]
    #: True when the delivery had been accepted before: nothing was written
    duplicate: bool
    #: how many messages the ingest put in the outbox
    messages: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryIds:
    #: the delivery's idea (None when it names none)
    idea_id: uuid.UUID | None
    #: True when the idea did not exist before this delivery
    idea_created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """An external delivery that starts no run: inbox record, the idea it names (created when new), events
    and outbox messages, all or nothing."""

    source: str
    delivery_id: str
    received_at: datetime
    idea: IdeaDraft | None = None
    #: called inside the transaction once the idea's id is known
    effects: Callable[[DeliveryIds], IngestEffects]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ids: DeliveryIds | None
    response: Mapping[str, Any]
    #: True when the delivery had been accepted before: nothing was written
    duplicate: bool
    messages: int = 0


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


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanVersionDraft:
    #: ``run`` (a planning run's callback), ``comment`` (intake) or ``api``
    source: str
    markdown: str
    #: the parsed plan in docs/plans.md's JSON form
    document: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanVersion:
    idea_id: uuid.UUID
    version: int
    source: str
    markdown: str
    document: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """A plan task to create (its dependencies by key, within the same idea)."""

    id: uuid.UUID
    key: str
    title: str
    description: str
    depends_on: tuple[str, ...]
    acceptance_criteria: tuple[str, ...]
    paths: tuple[str, ...]
    heavy: bool
    state: TaskState
    stage: Stage = Stage.IMPLEMENTATION


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDraft:
    id: uuid.UUID
    plan_version: int
    #: ``approved``, ``rejected`` or ``automatic``
    decision: str
    decided_by: str
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    id: uuid.UUID
    idea_id: uuid.UUID
    plan_version: int
    decision: str
    decided_by: str
    reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class IdeaCreation:
    """A new idea with what it starts with, in one transaction: its first plan version, the approval
    decision, its tasks (when the plan is approved) and the events and messages that record it."""

    idea: IdeaDraft
    at: datetime
    plan: PlanVersionDraft | None = None
    approval: ApprovalDraft | None = None
    #: the approved plan version its tasks are built from (None while no plan is approved)
    plan_version: int | None = None
    tasks: Sequence[TaskSpec] = ()
    events: Sequence[NewEvent] = ()
    messages: Sequence[Message] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskView:
    task: Task
    #: keys of the tasks it depends on
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class IdeaDetail:
    idea: Idea
    #: idea spec as stored
    spec: Mapping[str, Any]
    plans: list[PlanVersion]
    tasks: list[TaskView]
    runs: list[Run]
    approvals: list[Approval]


@dataclass(frozen=True, slots=True, kw_only=True)
class IdeaFilter:
    states: Collection[IdeaState] = ()
    repository: str | None = None
    source: IdeaSource | None = None
    limit: int = 50
    #: ideas created before this one (the previous page's last), newest first
    before: tuple[datetime, uuid.UUID] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What a run reported about itself, applied once per (run, key) in one transaction.

    The status changes only where the run table allows (``RUN_TRANSITIONS``: an event arriving after the
    run ended changes no status);
    times only move forward; usage adds up on the run and its idea.
    """

    run_id: uuid.UUID
    #: the event's idempotency key within the run
    key: str
    received_at: datetime
    status: RunStatus | None = None
    #: sets ``started_at`` when it is unset
    started: bool = False
    #: moves ``heartbeat_at`` to ``received_at``
    heartbeat: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    summary: str | None = None
    artifacts: Sequence[Any] | None = None
    pull_request: str | None = None
    branch: str | None = None
    #: a new version of the run's idea's plan
    plan: PlanVersionDraft | None = None
    #: called inside the transaction with what changed
    effects: Callable[[ReportOutcome], IngestEffects]


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    run: Run
    previous_status: RunStatus
    status_changed: bool
    #: the version the report's plan was stored as
    plan_version: int | None


@dataclass(frozen=True, slots=True)
class ReportResult:
    #: True when this (run, key) was reported before: nothing was written
    duplicate: bool
    response: Mapping[str, Any]
    outcome: ReportOutcome | None
    messages: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskChange:
    """A task's new state; the back-off time and claim are set as given (None clears them)."""

    task_id: uuid.UUID
    state: TaskState
    #: None keeps the count
    attempts: int | None = None
    not_before: datetime | None = None
    claimed_by: str | None = None
    claim_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """A run to create for one of the idea's tasks (``queued``)."""

    id: uuid.UUID
    task_id: uuid.UUID
    stage: Stage
    delivery_id: str
    executor: str | None
    workflow_name: str | None
    namespace: str | None
    event_body: bytes
    raw_event: bytes
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class IdeaChange:
    """What the orchestrator decided about one idea, applied in one transaction (see
    :meth:`Store.change_idea`)."""

    state: IdeaState | None = None
    paused: bool | None = None
    #: the approved plan version (the one tasks are built from)
    plan_version: int | None = None
    #: a new version of the plan, stored as the next version number (``len(detail.plans) + 1``)
    plan: PlanVersionDraft | None = None
    approval: ApprovalDraft | None = None
    #: tasks to create (built from ``plan_version``, or the idea's approved version)
    new_tasks: Sequence[TaskSpec] = ()
    tasks: Sequence[TaskChange] = ()
    runs: Sequence[NewRun] = ()
    run_updates: Sequence[tuple[uuid.UUID, RunUpdate]] = ()
    events: Sequence[NewEvent] = ()
    messages: Sequence[Message] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.state
            or self.paused is not None
            or self.plan_version is not None
            or self.plan
            or self.approval
            or self.new_tasks
            or self.tasks
            or self.runs
            or self.run_updates
            or self.events
            or self.messages
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimLimits:
    max_concurrent: int
    max_per_repository: int
    max_heavy: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveRuns:
    """Claimed or running plan tasks, counted against the scheduler's limits."""

    total: int = 0
    by_repository: Mapping[str, int] = field(default_factory=dict)
    heavy: int = 0

    def admits(self, repository: str, heavy: bool, limits: ClaimLimits) -> bool:
        return (
            self.total < limits.max_concurrent
            and self.by_repository.get(repository, 0) < limits.max_per_repository
            and (not heavy or self.heavy < limits.max_heavy)
        )

    def plus(self, repository: str, heavy: bool) -> ActiveRuns:
        by_repository = dict(self.by_repository)
        by_repository[repository] = by_repository.get(repository, 0) + 1
        return ActiveRuns(total=self.total + 1, by_repository=by_repository, heavy=self.heavy + int(heavy))


@dataclass(frozen=True, slots=True, kw_only=True)
class Dependency:
    key: str
    title: str
    state: TaskState
    #: from its last succeeded run
    branch: str | None
    summary: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimCandidate:
    """A ready task the scheduler may dispatch, with what its run's event needs."""

    task: Task
    #: the idea as this pass has left it (its state moves with the first claim)
    idea: Idea
    dependencies: tuple[Dependency, ...]
    #: the approved plan (markdown), None when the idea has none
    plan_markdown: str | None
    #: how many runs the task had (its next run is number ``runs + 1``, also after an operator's retry)
    runs: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """What claiming one task writes: the run, the idea's move (when its first task starts), events and
    messages."""

    run: NewRun
    idea_state: IdeaState | None = None
    events: Sequence[NewEvent] = ()
    messages: Sequence[Message] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    """One scheduling pass: claim ready tasks of unpaused ideas (priority, then oldest task first, then plan
    order) whose back-off is over, within the limits, for ``holder`` until ``until``."""

    holder: str
    now: datetime
    until: datetime
    limits: ClaimLimits
    #: called inside the transaction for each task admitted
    build: Callable[[ClaimCandidate], Claimed]

    def claim(self, task: Task) -> TaskChange:
        """What claiming ``task`` does to it: ``queued``, one more attempt, this holder's claim."""
        return TaskChange(
            task_id=task.id,
            state=TaskState.QUEUED,
            attempts=task.attempts + 1,
            claimed_by=self.holder,
            claim_expires_at=self.until,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedRun:
    run: Run
    event_body: bytes
    raw_event: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    claimed: list[ClaimedRun]
    #: a limit held back a ready task: the pass left work behind
    saturated: bool


REPORT_SOURCE = "run_event"


def report_delivery_id(run_id: uuid.UUID, key: str) -> str:
    """The inbox key of a run's report: ``<run id>/<event id>``."""
    return f"{run_id}/{key}"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A message waiting in the outbox (``id`` orders them: publish in that order)."""

    id: int
    message: Message
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Messages not published yet: how many, and when the oldest was written."""

    count: int
    oldest_created_at: datetime | None


def outbox_key(key: bytes | None) -> str | None:
    """Keys are stored as text (ours are: ``issue-<n>-<stage>``, ``run-<id>``); others are refused."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise StoreError(f"outbox message key is not UTF-8 text: {key[:40]!r}") from None


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

    async def record_delivery(self, delivery: Delivery) -> DeliveryResult:
        """Record a delivery that starts no run (with its idea, events and messages), or return the answer
        stored for it when it was recorded (or ingested) before."""
        ...

    async def get_idea(self, idea_id: uuid.UUID) -> Idea: ...

    async def get_task(self, task_id: uuid.UUID) -> Task: ...

    async def get_run(self, run_id: uuid.UUID) -> Run: ...

    async def list_runs(
        self,
        *,
        statuses: Collection[RunStatus] = (),
        dispatched_only: bool = False,
        unclaimed_only: bool = False,
        finished_after: datetime | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs, oldest first; ``dispatched_only`` keeps runs that have an executor, ``unclaimed_only`` the
        runs of tasks no scheduler claimed (scheduled runs are resubmitted by :meth:`stale_claims`),
        ``finished_after`` the runs that ended at or after that time."""
        ...

    async def run_payload(self, run_id: uuid.UUID) -> tuple[bytes, bytes]:
        """The run's (event_body, raw_event)."""
        ...

    async def update_run(
        self,
        run_id: uuid.UUID,
        update: RunUpdate,
        event: NewEvent | None,
        messages: Sequence[Message] = (),
    ) -> Run | None:
        """Apply the update, append the event and put the messages in the outbox; None (and nothing
        written) when the run was not in an expected status."""
        ...

    async def create_idea(self, creation: IdeaCreation) -> Idea:
        """Create the idea and what it starts with; raise :class:`facteur.errors.Conflict` when an idea
        with its source and source_ref exists."""
        ...

    async def find_idea(self, source: IdeaSource, source_ref: str) -> Idea | None: ...

    async def idea_detail(self, idea_id: uuid.UUID) -> IdeaDetail: ...

    async def list_ideas(self, query: IdeaFilter) -> list[Idea]:
        """Ideas matching the filter, newest first."""
        ...

    async def list_plans(self, idea_id: uuid.UUID) -> list[PlanVersion]:
        """Every version of the idea's plan, oldest first."""
        ...

    async def change_idea(self, idea_id: uuid.UUID, decide: Callable[[IdeaDetail], IdeaChange]) -> IdeaChange:
        """Read the idea (locked against other writers), call ``decide`` inside the transaction and apply
        what it returns; an exception from ``decide`` writes nothing. Raise :class:`NotFound` for an
        unknown idea."""
        ...

    async def claim_tasks(self, request: ClaimRequest) -> ClaimResult:
        """One scheduling pass (serialised across replicas; on PostgreSQL tasks are taken with
        ``FOR UPDATE SKIP LOCKED``)."""
        ...

    async def active_runs(self) -> ActiveRuns:
        """What counts against the scheduler's limits now."""
        ...

    async def stale_claims(self, holder: str, *, now: datetime, until: datetime, limit: int) -> list[Run]:
        """Take over claimed tasks whose claim expired before their run was submitted: the claims become
        ``holder``'s until ``until``; returns their queued runs."""
        ...

    async def unsettled_runs(self, limit: int) -> list[Run]:
        """Finished runs whose plan task still counts as queued or running (the reaction to their end was
        lost), and the latest run of ideas still planning when it finished."""
        ...

    async def ideas_to_plan(self, limit: int) -> list[uuid.UUID]:
        """Registered ideas with no task yet: their planning run is still to be created."""
        ...

    async def report_run(self, report: RunReport) -> ReportResult:
        """Apply a run's report once (raise :class:`NotFound` for an unknown run, writing nothing)."""
        ...

    def on_outbox_write(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` (on the event loop) after a write that may have put messages in the outbox."""
        ...

    async def enqueue(self, messages: Sequence[Message]) -> None:
        """Put messages in the outbox (in order), for the relay to publish."""
        ...

    async def pending_outbox(self, limit: int, *, after_id: int = 0) -> list[OutboxEntry]:
        """The oldest unpublished messages with an id above ``after_id``, in outbox order."""
        ...

    async def mark_published(self, entry_ids: Sequence[int], at: datetime) -> None: ...

    async def outbox_backlog(self) -> OutboxBacklog: ...

    async def prune_outbox(self, published_before: datetime) -> int:
        """Delete messages published before the given time; returns how many."""
        ...

    async def acquire_lease(self, name: str, holder: str, *, now: datetime, until: datetime) -> bool:
        """Take or renew the named lease for ``holder`` until ``until``; False while another holder's lease
        has not expired at ``now``."""
        ...

    async def append_event(self, event: NewEvent) -> Event: ...

    async def chain_head(self) -> tuple[int, str]:
        """The audit chain's recorded head: the last event's seq and hash (0 and the genesis hash when
        empty)."""
        ...

    async def list_events(
        self,
        *,
        idea_id: uuid.UUID | None = None,
        run_id: uuid.UUID | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[Event]: ...
