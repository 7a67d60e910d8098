"""The in-memory store: the embedded model of the SQL store's behaviour, for unit tests and dry runs.

Each operation runs to completion without awaiting, so operations are atomic on one event loop. It passes
the same contract suite as the SQL adapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from facteur.bus.port import Message
from facteur.clock import Clock
from facteur.domain.events import GENESIS_HASH, Event, NewEvent, seal
from facteur.domain.ideas import PLANNED_SOURCES, Idea, IdeaSource, IdeaState
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState
from facteur.errors import Conflict, NotFound, StoreError, StoreUnavailable
from facteur.store.migrate import head_revision
from facteur.store.port import (
    REPORT_SOURCE,
    ActiveRuns,
    Approval,
    ClaimCandidate,
    ClaimedRun,
    ClaimRequest,
    ClaimResult,
    Delivery,
    DeliveryIds,
    DeliveryResult,
    Dependency,
    IdeaChange,
    IdeaCreation,
    IdeaDetail,
    IdeaDraft,
    IdeaFilter,
    Ingest,
    IngestIds,
    IngestResult,
    NewRun,
    OutboxBacklog,
    OutboxEntry,
    PlanVersion,
    ReportOutcome,
    ReportResult,
    RunReport,
    RunUpdate,
    TaskChange,
    TaskSpec,
    TaskView,
    outbox_key,
    report_delivery_id,
)
from facteur.store.reports import report_changes
from facteur.store.rows import new_idea, new_run

T = TypeVar("T")


class MemoryStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.ideas: dict[uuid.UUID, Idea] = {}
        self.tasks: dict[uuid.UUID, Task] = {}
        self.runs: dict[uuid.UUID, Run] = {}
        self.payloads: dict[uuid.UUID, tuple[bytes, bytes]] = {}
        self.events: list[Event] = []
        self.deliveries: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.outbox: list[_Outboxed] = []
        self._outbox_ids = itertools.count(1)
        self._outbox_listener: Callable[[], None] | None = None
        self.leases: dict[str, tuple[str, datetime]] = {}
        self.plans: dict[uuid.UUID, list[PlanVersion]] = {}
        self.specs: dict[uuid.UUID, Mapping[str, Any]] = {}
        self.approvals: list[Approval] = []
        #: task id -> the ids of the tasks it depends on
        self.dependencies: dict[uuid.UUID, list[uuid.UUID]] = {}
        #: set to make every operation fail as if the database were down
        self.unavailable = False

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("database unavailable: the in-memory store is switched off")

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        self._check()

    async def schema_revision(self) -> str | None:
        self._check()
        return head_revision()

    async def find_delivery(self, source: str, delivery_id: str) -> Mapping[str, Any] | None:
        self._check()
        return self.deliveries.get((source, delivery_id))

    async def ingest(self, ingest: Ingest) -> IngestResult:
        self._check()
        key = (ingest.source, ingest.delivery_id)
        if key in self.deliveries:
            return IngestResult(None, self.deliveries[key], duplicate=True)
        if any(run.delivery_id == ingest.run.delivery_id for run in self.runs.values()):
            raise StoreError(f"database error: run delivery_id {ingest.run.delivery_id} already recorded")
        now = ingest.received_at
        idea, idea_created = self._idea_for(ingest.idea, now)
        task = next(
            (t for t in self.tasks.values() if t.idea_id == idea.id and t.key == ingest.task.key),
            None,
        )
        if task is None:
            task = Task(
                id=ingest.task.id,
                idea_id=idea.id,
                key=ingest.task.key,
                title=ingest.task.title,
                stage=ingest.task.stage.value,
                state=ingest.task.state,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
        else:
            task = dataclasses.replace(task, state=TaskState(ingest.task.state), updated_at=now)
        draft_run = ingest.run
        run = Run(
            id=draft_run.id,
            idea_id=idea.id,
            task_id=task.id,
            stage=draft_run.stage,
            delivery_id=draft_run.delivery_id,
            status=draft_run.status,
            executor=draft_run.executor,
            workflow_name=draft_run.workflow_name,
            namespace=draft_run.namespace,
            created_at=now,
            submitted_at=None,
            finished_at=None,
            detail=None,
        )
        ids = IngestIds(idea_id=idea.id, task_id=task.id, run_id=run.id, idea_created=idea_created)
        effects = ingest.effects(ids)
        # everything computed: now apply, so that a failure above leaves nothing behind
        response = json.loads(json.dumps(dict(effects.response)))
        _check_keys(effects.messages)
        self.ideas[idea.id] = idea
        self.tasks[task.id] = task
        self.runs[run.id] = run
        self.payloads[run.id] = (draft_run.event_body, draft_run.raw_event)
        self.deliveries[key] = response
        for alias in ingest.aliases:
            self.deliveries.setdefault(alias, response)
        for new_event in effects.events:
            self._append(new_event, now)
        self._enqueue(effects.messages, now)
        return IngestResult(ids, response, duplicate=False, messages=len(effects.messages))

    async def record_delivery(self, delivery: Delivery) -> DeliveryResult:
        self._check()
        key = (delivery.source, delivery.delivery_id)
        if key in self.deliveries:
            return DeliveryResult(None, self.deliveries[key], duplicate=True)
        now = delivery.received_at
        idea: Idea | None = None
        created = False
        if delivery.idea is not None:
            idea, created = self._idea_for(delivery.idea, now)
        ids = DeliveryIds(idea_id=None if idea is None else idea.id, idea_created=created)
        effects = delivery.effects(ids)
        response = json.loads(json.dumps(dict(effects.response)))
        _check_keys(effects.messages)
        if idea is not None:
            self.ideas[idea.id] = idea
        self.deliveries[key] = response
        for new_event in effects.events:
            self._append(new_event, now)
        self._enqueue(effects.messages, now)
        return DeliveryResult(ids, response, duplicate=False, messages=len(effects.messages))

    def _idea_for(self, draft: IdeaDraft, now: datetime) -> tuple[Idea, bool]:
        """The idea with the draft's source and source ref, or a new one from the draft (not stored yet)."""
        idea = next(
            (i for i in self.ideas.values() if (i.source, i.source_ref) == (draft.source, draft.source_ref)),
            None,
        )
        if idea is not None:
            return idea, False
        new = new_idea(draft, now)
        return new, True

    async def get_idea(self, idea_id: uuid.UUID) -> Idea:
        self._check()
        return _found(self.ideas.get(idea_id), "idea", idea_id)

    async def get_task(self, task_id: uuid.UUID) -> Task:
        self._check()
        return _found(self.tasks.get(task_id), "task", task_id)

    async def get_run(self, run_id: uuid.UUID) -> Run:
        self._check()
        return _found(self.runs.get(run_id), "run", run_id)

    async def list_runs(
        self,
        *,
        statuses: Collection[RunStatus] = (),
        dispatched_only: bool = False,
        unclaimed_only: bool = False,
        finished_after: datetime | None = None,
        limit: int = 100,
    ) -> list[Run]:
        self._check()
        selected = [
            run
            for run in self.runs.values()
            if (not statuses or run.status in statuses)
            and (not dispatched_only or run.executor is not None)
            and (not unclaimed_only or self.tasks[run.task_id].claimed_by is None)
            and (
                finished_after is None or (run.finished_at is not None and run.finished_at >= finished_after)
            )
        ]
        selected.sort(key=lambda run: (run.created_at, run.id))
        return selected[:limit]

    async def run_payload(self, run_id: uuid.UUID) -> tuple[bytes, bytes]:
        self._check()
        return _found(self.payloads.get(run_id), "run", run_id)

    async def update_run(
        self,
        run_id: uuid.UUID,
        update: RunUpdate,
        event: NewEvent | None,
        messages: Sequence[Message] = (),
    ) -> Run | None:
        self._check()
        _check_keys(messages)
        run = _found(self.runs.get(run_id), "run", run_id)
        if update.expected and run.status not in update.expected:
            return None
        run = _updated_run(run, update)
        self.runs[run_id] = run
        if event is not None:
            self._append(event)
        self._enqueue(messages, self._clock.now())
        return run

    # --- the outbox and leases -----------------------------------------------------------------------------

    async def create_idea(self, creation: IdeaCreation) -> Idea:
        self._check()
        draft, at = creation.idea, creation.at
        if await self.find_idea(draft.source, draft.source_ref) is not None:
            raise Conflict(f"an idea from {draft.source.value} {draft.source_ref!r} exists already")
        _check_keys(creation.messages)
        plan_version = creation.plan_version
        idea = new_idea(draft, at, plan_version=plan_version)
        self.ideas[idea.id] = idea
        self.specs[idea.id] = json.loads(json.dumps(dict(draft.spec)))
        if creation.plan is not None:
            self.plans[idea.id] = [
                PlanVersion(
                    idea_id=idea.id,
                    version=1,
                    source=creation.plan.source,
                    markdown=creation.plan.markdown,
                    document=json.loads(json.dumps(dict(creation.plan.document))),
                    created_at=at,
                )
            ]
        if creation.approval is not None:
            a = creation.approval
            self.approvals.append(
                Approval(
                    id=a.id,
                    idea_id=idea.id,
                    plan_version=a.plan_version,
                    decision=a.decision,
                    decided_by=a.decided_by,
                    reason=a.reason,
                    created_at=at,
                )
            )
        self._add_tasks(idea, creation.tasks, at=at, plan_version=plan_version)
        for event in creation.events:
            self._append(event, at)
        self._enqueue(creation.messages, at)
        return idea

    async def find_idea(self, source: IdeaSource, source_ref: str) -> Idea | None:
        self._check()
        return next(
            (i for i in self.ideas.values() if (i.source, i.source_ref) == (source, source_ref)), None
        )

    async def idea_detail(self, idea_id: uuid.UUID) -> IdeaDetail:
        self._check()
        idea = _found(self.ideas.get(idea_id), "idea", idea_id)
        own = sorted(
            (t for t in self.tasks.values() if t.idea_id == idea_id),
            key=lambda t: (t.created_at, t.position or 0, t.id),
        )
        key_of = {t.id: t.key for t in own}
        return IdeaDetail(
            idea=idea,
            spec=self.specs.get(idea_id, {}),
            plans=list(self.plans.get(idea_id, [])),
            tasks=[
                TaskView(task=t, depends_on=tuple(sorted(key_of[d] for d in self.dependencies.get(t.id, []))))
                for t in own
            ],
            runs=sorted(
                (r for r in self.runs.values() if r.idea_id == idea_id), key=lambda r: (r.created_at, r.id)
            ),
            approvals=[a for a in self.approvals if a.idea_id == idea_id],
        )

    async def list_ideas(self, query: IdeaFilter) -> list[Idea]:
        self._check()
        found = [
            i
            for i in self.ideas.values()
            if (not query.states or i.state in query.states)
            and (query.repository is None or i.repository == query.repository)
            and (query.source is None or i.source == query.source)
            and (query.before is None or (i.created_at, i.id) < query.before)
        ]
        found.sort(key=lambda i: (i.created_at, i.id), reverse=True)
        return found[: query.limit]

    async def list_plans(self, idea_id: uuid.UUID) -> list[PlanVersion]:
        self._check()
        return list(self.plans.get(idea_id, []))

    async def report_run(self, report: RunReport) -> ReportResult:
        self._check()
        key = (REPORT_SOURCE, report_delivery_id(report.run_id, report.key))
        if key in self.deliveries:
            return ReportResult(True, self.deliveries[key], None)
        before = _found(self.runs.get(report.run_id), "run", report.run_id)
        changes = report_changes(before, report)
        after = dataclasses.replace(before, **changes) if changes else before
        version = None
        new_plan = None
        if report.plan is not None:
            version = len(self.plans.get(before.idea_id, [])) + 1
            new_plan = PlanVersion(
                idea_id=before.idea_id,
                version=version,
                source=report.plan.source,
                markdown=report.plan.markdown,
                document=json.loads(json.dumps(dict(report.plan.document))),
                created_at=report.received_at,
            )
        outcome = ReportOutcome(after, before.status, after.status != before.status, version)
        effects = report.effects(outcome)
        response = json.loads(json.dumps(dict(effects.response)))
        _check_keys(effects.messages)
        # everything computed: now apply
        self.runs[before.id] = after
        if report.tokens_in or report.tokens_out or report.cost_usd:
            idea = self.ideas[before.idea_id]
            self.ideas[idea.id] = dataclasses.replace(
                idea,
                tokens_in=idea.tokens_in + report.tokens_in,
                tokens_out=idea.tokens_out + report.tokens_out,
                cost_usd=idea.cost_usd + report.cost_usd,
            )
        if new_plan is not None:
            self.plans.setdefault(before.idea_id, []).append(new_plan)
        self.deliveries[key] = response
        for new_event in effects.events:
            self._append(new_event, report.received_at)
        self._enqueue(effects.messages, report.received_at)
        return ReportResult(False, response, outcome, len(effects.messages))

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """All or nothing: what an operation changed is put back when it raises (like a rollback)."""
        saved = (
            dict(self.ideas),
            dict(self.tasks),
            dict(self.runs),
            dict(self.payloads),
            {k: list(v) for k, v in self.plans.items()},
            list(self.approvals),
            dict(self.dependencies),
            len(self.events),
            len(self.outbox),
        )
        try:
            yield
        except BaseException:
            (
                self.ideas,
                self.tasks,
                self.runs,
                self.payloads,
                self.plans,
                self.approvals,
                self.dependencies,
            ) = saved[:7]
            del self.events[saved[7] :]
            del self.outbox[saved[8] :]
            raise

    async def change_idea(self, idea_id: uuid.UUID, decide: Callable[[IdeaDetail], IdeaChange]) -> IdeaChange:
        self._check()
        detail = await self.idea_detail(idea_id)
        change = decide(detail)
        _check_keys(change.messages)
        if change.empty:
            return change
        with self._atomic():
            self._apply_change(detail, change)
        return change

    def _apply_change(self, detail: IdeaDetail, change: IdeaChange) -> None:
        idea_id = detail.idea.id
        now = self._clock.now()
        idea = detail.idea
        version = len(detail.plans) + 1
        if change.plan is not None:
            self.plans.setdefault(idea_id, []).append(
                PlanVersion(
                    idea_id=idea_id,
                    version=version,
                    source=change.plan.source,
                    markdown=change.plan.markdown,
                    document=json.loads(json.dumps(dict(change.plan.document))),
                    created_at=now,
                )
            )
        updates: dict[str, Any] = {"updated_at": now}
        if change.state is not None:
            updates["state"] = change.state
        if change.paused is not None:
            updates["paused"] = change.paused
        if change.plan_version is not None:
            updates["plan_version"] = change.plan_version
        self.ideas[idea_id] = dataclasses.replace(idea, **updates)
        if change.approval is not None:
            a = change.approval
            self.approvals.append(
                Approval(
                    id=a.id,
                    idea_id=idea_id,
                    plan_version=a.plan_version,
                    decision=a.decision,
                    decided_by=a.decided_by,
                    reason=a.reason,
                    created_at=now,
                )
            )
        self._add_tasks(
            idea,
            change.new_tasks,
            at=now,
            plan_version=change.plan_version or idea.plan_version,
            known={view.task.key: view.task.id for view in detail.tasks},
        )
        for task_change in change.tasks:
            self._change_task(task_change, now)
        for draft in change.runs:
            self._add_run(idea_id, draft, now)
        for run_id, update in change.run_updates:
            run = self.runs.get(run_id)
            if run is None or (update.expected and run.status not in update.expected):
                continue
            self.runs[run_id] = _updated_run(run, update)
        for event in change.events:
            self._append(event, now)
        self._enqueue(change.messages, now)

    def _add_tasks(
        self,
        idea: Idea,
        specs: Sequence[TaskSpec],
        *,
        at: datetime,
        plan_version: int | None,
        known: Mapping[str, uuid.UUID] | None = None,
    ) -> None:
        id_of = dict(known or {})
        id_of.update({spec.key: spec.id for spec in specs})
        for position, spec in enumerate(specs):
            self.tasks[spec.id] = Task(
                id=spec.id,
                idea_id=idea.id,
                key=spec.key,
                title=spec.title,
                stage=spec.stage.value,
                state=spec.state,
                attempts=0,
                created_at=at,
                updated_at=at,
                description=spec.description,
                acceptance_criteria=spec.acceptance_criteria,
                paths=spec.paths,
                heavy=spec.heavy,
                plan_version=plan_version if spec.stage is Stage.IMPLEMENTATION else None,
                position=position,
                priority=idea.priority,
            )
            self.dependencies[spec.id] = [id_of[key] for key in spec.depends_on]

    def _change_task(self, change: TaskChange, now: datetime) -> None:
        task = self.tasks[change.task_id]
        self.tasks[task.id] = dataclasses.replace(
            task,
            state=change.state,
            attempts=task.attempts if change.attempts is None else change.attempts,
            not_before=change.not_before,
            claimed_by=change.claimed_by,
            claim_expires_at=change.claim_expires_at,
            updated_at=now,
        )

    def _add_run(self, idea_id: uuid.UUID, new: NewRun, now: datetime) -> Run:
        run = new_run(new, idea_id, now)
        self.runs[run.id] = run
        self.payloads[run.id] = (new.event_body, new.raw_event)
        return run

    async def active_runs(self) -> ActiveRuns:
        self._check()
        return self._active()

    def _active(self) -> ActiveRuns:
        active = ActiveRuns()
        for task in self.tasks.values():
            if task.state in _ACTIVE and task.plan_version is not None:
                active = active.plus(self.ideas[task.idea_id].repository, task.heavy)
        return active

    async def claim_tasks(self, request: ClaimRequest) -> ClaimResult:
        self._check()
        with self._atomic():
            return self._claim_tasks(request)

    def _claim_tasks(self, request: ClaimRequest) -> ClaimResult:
        active = self._active()
        ready = sorted(
            (
                task
                for task in self.tasks.values()
                if task.state is TaskState.READY
                and task.plan_version is not None
                and not self.ideas[task.idea_id].paused
                and self.ideas[task.idea_id].state in _SCHEDULED
            ),
            key=lambda task: (task.priority, task.created_at, task.position or 0, task.id),
        )
        claimed: list[ClaimedRun] = []
        saturated = False
        for task in ready:
            if task.not_before is not None and task.not_before > request.now:
                continue
            idea = self.ideas[task.idea_id]
            if active.total >= request.limits.max_concurrent:
                saturated = True
                break
            if not active.admits(idea.repository, task.heavy, request.limits):
                saturated = True
                continue
            candidate = ClaimCandidate(
                task=task,
                idea=idea,
                dependencies=self._dependencies(task),
                plan_markdown=self._plan_markdown(idea),
                runs=sum(1 for run in self.runs.values() if run.task_id == task.id),
            )
            outcome = request.build(candidate)
            _check_keys(outcome.messages)
            self._change_task(request.claim(task), request.now)
            run = self._add_run(idea.id, outcome.run, request.now)
            if outcome.idea_state is not None:
                self.ideas[idea.id] = dataclasses.replace(
                    idea, state=outcome.idea_state, updated_at=request.now
                )
            for event in outcome.events:
                self._append(event, request.now)
            self._enqueue(outcome.messages, request.now)
            claimed.append(
                ClaimedRun(run=run, event_body=outcome.run.event_body, raw_event=outcome.run.raw_event)
            )
            active = active.plus(idea.repository, task.heavy)
        return ClaimResult(claimed=claimed, saturated=saturated)

    def _dependencies(self, task: Task) -> tuple[Dependency, ...]:
        found = []
        for dep_id in self.dependencies.get(task.id, []):
            dep = self.tasks[dep_id]
            last = max(
                (r for r in self.runs.values() if r.task_id == dep_id and r.status is RunStatus.SUCCEEDED),
                key=lambda r: (r.created_at, r.attempt),
                default=None,
            )
            found.append(
                Dependency(
                    key=dep.key,
                    title=dep.title,
                    state=dep.state,
                    branch=None if last is None else last.branch,
                    summary=None if last is None else last.summary,
                )
            )
        return tuple(sorted(found, key=lambda d: d.key))

    def _plan_markdown(self, idea: Idea) -> str | None:
        for plan in self.plans.get(idea.id, []):
            if plan.version == idea.plan_version:
                return plan.markdown
        return None

    async def stale_claims(self, holder: str, *, now: datetime, until: datetime, limit: int) -> list[Run]:
        self._check()
        taken: list[Run] = []
        expiry = {t.id: t.claim_expires_at for t in self.tasks.values()}
        for run in sorted(self.runs.values(), key=lambda r: (expiry[r.task_id] or now, r.created_at, r.id)):
            task = self.tasks[run.task_id]
            if (
                run.status is RunStatus.QUEUED
                and run.executor is not None
                and task.state is TaskState.QUEUED
                and task.claim_expires_at is not None
                and task.claim_expires_at <= now
            ):
                self.tasks[task.id] = dataclasses.replace(task, claimed_by=holder, claim_expires_at=until)
                taken.append(run)
                if len(taken) >= limit:
                    break
        return taken

    async def unsettled_runs(self, limit: int) -> list[Run]:
        self._check()
        latest: dict[uuid.UUID, Run] = {}
        for run in self.runs.values():
            if run.task_id not in latest or (run.created_at, run.attempt) > (
                latest[run.task_id].created_at,
                latest[run.task_id].attempt,
            ):
                latest[run.task_id] = run
        found = []
        for task_id, run in latest.items():
            task = self.tasks[task_id]
            if not run.status.terminal:
                continue
            if (task.plan_version is not None and task.state in _ACTIVE) or (
                task.stage == Stage.PLANNING.value
                and self.ideas[task.idea_id].state is IdeaState.PLANNING
                and task.state in _ACTIVE
            ):
                found.append(run)
        found.sort(key=lambda r: (r.created_at, r.id))
        return found[:limit]

    async def ideas_to_plan(self, limit: int) -> list[uuid.UUID]:
        self._check()
        with_tasks = {task.idea_id for task in self.tasks.values()}
        found = sorted(
            (
                i
                for i in self.ideas.values()
                if i.state is IdeaState.REGISTERED and i.source in PLANNED_SOURCES and i.id not in with_tasks
            ),
            key=lambda i: (i.created_at, i.id),
        )
        return [i.id for i in found[:limit]]

    def on_outbox_write(self, listener: Callable[[], None] | None) -> None:
        self._outbox_listener = listener

    def _enqueue(self, messages: Sequence[Message], at: datetime) -> None:
        """Append messages whose keys were checked (:func:`_check_keys`) before anything was changed."""
        for message in messages:
            self.outbox.append(_Outboxed(OutboxEntry(next(self._outbox_ids), message, at)))
        if messages and self._outbox_listener is not None:
            self._outbox_listener()

    async def enqueue(self, messages: Sequence[Message]) -> None:
        self._check()
        _check_keys(messages)
        self._enqueue(messages, self._clock.now())

    async def pending_outbox(self, limit: int, *, after_id: int = 0) -> list[OutboxEntry]:
        self._check()
        pending = [i.entry for i in self.outbox if i.published_at is None and i.entry.id > after_id]
        return pending[:limit]

    async def mark_published(self, entry_ids: Sequence[int], at: datetime) -> None:
        self._check()
        wanted = set(entry_ids)
        for item in self.outbox:
            if item.entry.id in wanted:
                item.published_at = at

    async def outbox_backlog(self) -> OutboxBacklog:
        self._check()
        pending = [item.entry for item in self.outbox if item.published_at is None]
        return OutboxBacklog(len(pending), pending[0].created_at if pending else None)

    async def prune_outbox(self, published_before: datetime) -> int:
        self._check()
        kept = [i for i in self.outbox if i.published_at is None or i.published_at >= published_before]
        pruned = len(self.outbox) - len(kept)
        self.outbox = kept
        return pruned

    async def acquire_lease(self, name: str, holder: str, *, now: datetime, until: datetime) -> bool:
        self._check()
        current = self.leases.get(name)
        if current is not None and current[0] != holder and current[1] >= now:
            return False
        self.leases[name] = (holder, until)
        return True

    async def append_event(self, event: NewEvent) -> Event:
        self._check()
        return self._append(event)

    async def chain_head(self) -> tuple[int, str]:
        self._check()
        if not self.events:
            return 0, GENESIS_HASH
        return self.events[-1].seq, self.events[-1].hash

    async def list_events(
        self,
        *,
        idea_id: uuid.UUID | None = None,
        run_id: uuid.UUID | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[Event]:
        self._check()
        selected = [
            event
            for event in self.events
            if event.seq > after_seq
            and (idea_id is None or event.idea_id == idea_id)
            and (run_id is None or event.run_id == run_id)
        ]
        return selected[:limit]

    def _append(self, new: NewEvent, at: Any = None) -> Event:
        prev_hash = self.events[-1].hash if self.events else GENESIS_HASH
        sealed = seal(new, seq=len(self.events) + 1, prev_hash=prev_hash, created_at=at or self._clock.now())
        self.events.append(sealed)
        return sealed


_ACTIVE = frozenset({TaskState.QUEUED, TaskState.RUNNING})
#: the idea states whose ready tasks the scheduler dispatches
_SCHEDULED = frozenset({IdeaState.AWAITING_DEPENDENCIES, IdeaState.RUNNING_TASKS})


def _updated_run(run: Run, update: RunUpdate) -> Run:
    changes: dict[str, Any] = {"status": update.status}
    for name in ("workflow_name", "namespace", "submitted_at", "finished_at", "detail"):
        value = getattr(update, name)
        if value is not None:
            changes[name] = value
    return dataclasses.replace(run, **changes)


def _check_keys(messages: Sequence[Message]) -> None:
    """Refuse the keys the SQL stores refuse, before an operation changes anything."""
    for message in messages:
        outbox_key(message.key)


@dataclass(slots=True)
class _Outboxed:
    entry: OutboxEntry
    published_at: datetime | None = None


def _found(value: T | None, noun: str, record_id: uuid.UUID) -> T:
    if value is None:
        raise NotFound(f"{noun} {record_id} does not exist")
    return value
