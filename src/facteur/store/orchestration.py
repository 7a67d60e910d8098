"""The SQL store's orchestration transactions: an idea changed as a whole, scheduling passes (claims),
and the reconciler's reads.

Every pass and every idea change appends events, so on PostgreSQL it starts by locking the audit chain's
head (:class:`facteur.store.writes.ChainHooks`): passes of all replicas are serialised by that lock, and
each one counts the claims the previous one committed — the concurrency limits hold across replicas.
Tasks are still taken ``FOR UPDATE SKIP LOCKED``, and an idea change locks its idea and its tasks, so a
claim never waits for, or undoes, a row another transaction holds.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from facteur.domain.ideas import PLANNED_SOURCES, Idea, IdeaState
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import TaskState
from facteur.errors import NotFound
from facteur.store.port import (
    ActiveRuns,
    Approval,
    ClaimCandidate,
    ClaimedRun,
    ClaimRequest,
    ClaimResult,
    Dependency,
    IdeaChange,
    IdeaDetail,
    NewRun,
    PlanVersion,
    TaskChange,
    TaskSpec,
    TaskView,
)
from facteur.store.rows import idea_from_row, new_run, run_from_row, task_from_row
from facteur.store.tables import approvals, ideas, plans, runs, task_dependencies, tasks

#: the conditions of the partial indexes, as literals (SQLite uses a partial index only for a literal match)
_READY = sa.text("tasks.state = 'ready'")
_ACTIVE = sa.text("tasks.state IN ('queued', 'running') AND tasks.plan_version IS NOT NULL")
_SCHEDULED_IDEAS = (IdeaState.AWAITING_DEPENDENCIES.value, IdeaState.RUNNING_TASKS.value)
_TERMINAL_RUNS = [status.value for status in RunStatus if status.terminal]


# --- reading an idea whole ---------------------------------------------------------------------------------


def read_detail(conn: sa.Connection, idea_id: uuid.UUID, *, lock: bool = False) -> IdeaDetail:
    """The idea with its plans, tasks (plan order), runs and approvals; with ``lock`` its row and its
    tasks' rows are locked until the transaction ends (PostgreSQL)."""
    query = sa.select(ideas).where(ideas.c.id == idea_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(f"idea {idea_id} does not exist")
    task_query = (
        sa.select(tasks)
        .where(tasks.c.idea_id == idea_id)
        .order_by(tasks.c.created_at, tasks.c.position, tasks.c.id)
    )
    task_rows = conn.execute(task_query.with_for_update() if lock else task_query).all()
    key_of = {r.id: r.key for r in task_rows}
    depends: dict[uuid.UUID, list[str]] = {}
    if task_rows:
        edges = conn.execute(
            sa.select(task_dependencies).where(task_dependencies.c.task_id.in_(list(key_of)))
        ).all()
        for edge in edges:
            depends.setdefault(edge.task_id, []).append(key_of[edge.depends_on_task_id])
    return IdeaDetail(
        idea=idea_from_row(row),
        spec=row.spec,
        plans=read_plans(conn, idea_id),
        tasks=[
            TaskView(task=task_from_row(r), depends_on=tuple(sorted(depends.get(r.id, []))))
            for r in task_rows
        ],
        runs=[
            run_from_row(r)
            for r in conn.execute(
                sa.select(runs).where(runs.c.idea_id == idea_id).order_by(runs.c.created_at, runs.c.id)
            )
        ],
        approvals=[
            Approval(
                id=r.id,
                idea_id=r.idea_id,
                plan_version=r.plan_version,
                decision=r.decision,
                decided_by=r.decided_by,
                reason=r.reason,
                created_at=r.created_at,
            )
            for r in conn.execute(
                sa.select(approvals)
                .where(approvals.c.idea_id == idea_id)
                .order_by(approvals.c.created_at, approvals.c.id)
            )
        ],
    )


def read_plans(conn: sa.Connection, idea_id: uuid.UUID) -> list[PlanVersion]:
    query = sa.select(plans).where(plans.c.idea_id == idea_id).order_by(plans.c.version)
    return [
        PlanVersion(
            idea_id=row.idea_id,
            version=row.version,
            source=row.source,
            markdown=row.markdown,
            document=row.document,
            created_at=row.created_at,
        )
        for row in conn.execute(query)
    ]


# --- applying an idea's change -----------------------------------------------------------------------------


class Orchestration:
    """The write side; ``append``, ``enqueue`` and ``update_runs`` are the store's event, outbox and run
    writers."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime],
        append: Callable[[sa.Connection, list[tuple[Any, datetime]]], None],
        enqueue: Callable[[sa.Connection, list[tuple[Any, datetime]]], None],
        update_runs: Callable[[sa.Connection, list[tuple[Any, ...]]], list[Any]],
    ) -> None:
        self._now = now
        self._append = append
        self._enqueue = enqueue
        self._update_runs = update_runs

    def change_idea(
        self, conn: sa.Connection, idea_id: uuid.UUID, decide: Callable[[IdeaDetail], IdeaChange]
    ) -> IdeaChange:
        detail = read_detail(conn, idea_id, lock=True)
        change = decide(detail)
        if change.empty:
            return change
        now = self._now()
        idea = detail.idea
        if change.plan is not None:
            conn.execute(
                sa.insert(plans).values(
                    idea_id=idea_id,
                    version=len(detail.plans) + 1,
                    source=change.plan.source,
                    markdown=change.plan.markdown,
                    document=dict(change.plan.document),
                    created_at=now,
                )
            )
        values: dict[str, Any] = {"updated_at": now}
        if change.state is not None:
            values["state"] = change.state.value
        if change.paused is not None:
            values["paused"] = change.paused
        if change.plan_version is not None:
            values["plan_version"] = change.plan_version
        conn.execute(sa.update(ideas).where(ideas.c.id == idea_id).values(**values))
        if change.approval is not None:
            a = change.approval
            conn.execute(
                sa.insert(approvals).values(
                    id=a.id,
                    idea_id=idea_id,
                    plan_version=a.plan_version,
                    decision=a.decision,
                    decided_by=a.decided_by,
                    reason=a.reason,
                    created_at=now,
                )
            )
        if change.new_tasks:
            insert_tasks(
                conn,
                idea_id,
                change.new_tasks,
                at=now,
                plan_version=change.plan_version or idea.plan_version,
                priority=idea.priority,
                known={view.task.key: view.task.id for view in detail.tasks},
            )
        if change.tasks:
            _change_tasks(conn, change.tasks, now)
        for run in change.runs:
            _insert_run(conn, idea_id, run, now)
        if change.run_updates:  # their events are the change's own, appended below
            self._update_runs(conn, [(run_id, update, None, ()) for run_id, update in change.run_updates])
        self._enqueue(conn, [(message, now) for message in change.messages])
        self._append(conn, [(event, now) for event in change.events])
        return change

    # --- scheduling passes ---------------------------------------------------------------------------------

    def claim_tasks(self, conn: sa.Connection, request: ClaimRequest) -> ClaimResult:
        active = read_active(conn)
        limits = request.limits
        claimed: list[ClaimedRun] = []
        saturated = False
        ideas_seen: dict[uuid.UUID, Idea] = {}
        plans_seen: dict[uuid.UUID, str | None] = {}
        after: tuple[Any, ...] | None = None
        # each page looks at a few more tasks than there are free slots: tasks over a repository's or the
        # heavy limit are passed over; pages continue until the slots are filled or the ready tasks end
        while active.total < limits.max_concurrent:
            page_size = max(16, 4 * (limits.max_concurrent - active.total))
            rows = _ready_page(conn, request.now, after, page_size)
            for row in rows:
                if active.total >= limits.max_concurrent:
                    break
                if not active.admits(row.idea_repository, bool(row.heavy), limits):
                    saturated = True
                    continue
                task = task_from_row(row)
                idea = ideas_seen.get(task.idea_id)
                if idea is None:
                    idea = ideas_seen[task.idea_id] = idea_from_row(
                        conn.execute(sa.select(ideas).where(ideas.c.id == task.idea_id)).one()
                    )
                if task.idea_id not in plans_seen:
                    plans_seen[task.idea_id] = conn.execute(
                        sa.select(plans.c.markdown).where(
                            plans.c.idea_id == idea.id, plans.c.version == idea.plan_version
                        )
                    ).scalar()
                outcome = request.build(
                    ClaimCandidate(
                        task=task,
                        idea=idea,
                        dependencies=read_dependencies(conn, task.id),
                        plan_markdown=plans_seen[task.idea_id],
                        runs=conn.execute(
                            sa.select(sa.func.count()).select_from(runs).where(runs.c.task_id == task.id)
                        ).scalar_one(),
                    )
                )
                _change_tasks(conn, [request.claim(task)], request.now)
                run = _insert_run(conn, idea.id, outcome.run, request.now)
                if outcome.idea_state is not None and outcome.idea_state is not idea.state:
                    conn.execute(
                        sa.update(ideas)
                        .where(ideas.c.id == idea.id)
                        .values(state=outcome.idea_state.value, updated_at=request.now)
                    )
                    ideas_seen[idea.id] = _with_state(idea, outcome.idea_state)
                self._enqueue(conn, [(m, request.now) for m in outcome.messages])
                self._append(conn, [(e, request.now) for e in outcome.events])
                claimed.append(
                    ClaimedRun(run=run, event_body=outcome.run.event_body, raw_event=outcome.run.raw_event)
                )
                active = active.plus(idea.repository, task.heavy)
            if len(rows) < page_size:
                break
            last = rows[-1]
            after = (last.priority, last.created_at, last.position, last.id)
        if active.total >= limits.max_concurrent:
            saturated = saturated or bool(_ready_page(conn, request.now, None, 1))
        return ClaimResult(claimed=claimed, saturated=saturated)

    def stale_claims(
        self, conn: sa.Connection, holder: str, now: datetime, until: datetime, limit: int
    ) -> list[Run]:
        stale = (
            conn.execute(
                sa.select(tasks.c.id)
                .where(
                    _ACTIVE,  # the partial index's terms, then the narrower one
                    sa.text("tasks.state = 'queued'"),
                    tasks.c.claim_expires_at <= now,
                    sa.exists().where(
                        runs.c.task_id == tasks.c.id,
                        runs.c.status == RunStatus.QUEUED.value,
                        runs.c.executor.is_not(None),
                    ),
                )
                .order_by(tasks.c.claim_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        if not stale:
            return []
        conn.execute(
            sa.update(tasks).where(tasks.c.id.in_(stale)).values(claimed_by=holder, claim_expires_at=until)
        )
        rows = conn.execute(
            sa.select(runs)
            .where(runs.c.task_id.in_(stale), runs.c.status == RunStatus.QUEUED.value)
            .order_by(runs.c.created_at, runs.c.id)
        )
        return [run_from_row(r) for r in rows]


def _ready_page(conn: sa.Connection, now: datetime, after: tuple[Any, ...] | None, size: int) -> list[Any]:
    """Ready tasks of unpaused ideas whose back-off is over, in dispatch order, locked (skipping rows
    another transaction holds)."""
    query = (
        sa.select(tasks, ideas.c.repository.label("idea_repository"))
        .join(ideas, ideas.c.id == tasks.c.idea_id)
        .where(
            _READY,
            tasks.c.plan_version.is_not(None),
            ideas.c.paused.is_(False),
            ideas.c.state.in_(_SCHEDULED_IDEAS),
            sa.or_(tasks.c.not_before.is_(None), tasks.c.not_before <= now),
        )
        .order_by(tasks.c.priority, tasks.c.created_at, tasks.c.position, tasks.c.id)
        .limit(size)
        .with_for_update(of=tasks, skip_locked=True)
    )
    if after is not None:
        query = query.where(
            sa.tuple_(tasks.c.priority, tasks.c.created_at, tasks.c.position, tasks.c.id) > sa.tuple_(*after)
        )
    return list(conn.execute(query).all())


def read_active(conn: sa.Connection) -> ActiveRuns:
    rows = conn.execute(
        sa.select(ideas.c.repository, tasks.c.heavy, sa.func.count())
        .select_from(tasks.join(ideas, ideas.c.id == tasks.c.idea_id))
        .where(_ACTIVE)
        .group_by(ideas.c.repository, tasks.c.heavy)
    ).all()
    by_repository: dict[str, int] = {}
    heavy = 0
    for repository, is_heavy, count in rows:
        by_repository[repository] = by_repository.get(repository, 0) + count
        if is_heavy:
            heavy += count
    return ActiveRuns(total=sum(by_repository.values()), by_repository=by_repository, heavy=heavy)


def read_dependencies(conn: sa.Connection, task_id: uuid.UUID) -> tuple[Dependency, ...]:
    deps = conn.execute(
        sa.select(tasks.c.id, tasks.c.key, tasks.c.title, tasks.c.state)
        .join(task_dependencies, task_dependencies.c.depends_on_task_id == tasks.c.id)
        .where(task_dependencies.c.task_id == task_id)
        .order_by(tasks.c.key)
    ).all()
    if not deps:
        return ()
    last: dict[uuid.UUID, Any] = {}
    # by the task index (a status filter in SQL let SQLite walk every succeeded run instead)
    for row in conn.execute(
        sa.select(runs.c.task_id, runs.c.status, runs.c.branch, runs.c.summary)
        .where(runs.c.task_id.in_([d.id for d in deps]))
        .order_by(runs.c.created_at, runs.c.attempt)
    ):
        if row.status == RunStatus.SUCCEEDED.value:
            last[row.task_id] = row
    return tuple(
        Dependency(
            key=d.key,
            title=d.title,
            state=TaskState(d.state),
            branch=last[d.id].branch if d.id in last else None,
            summary=last[d.id].summary if d.id in last else None,
        )
        for d in deps
    )


def read_unsettled(conn: sa.Connection, limit: int) -> list[Run]:
    other = runs.alias("other")
    latest = (
        sa.select(sa.func.max(other.c.attempt))
        .where(other.c.task_id == tasks.c.id)
        .correlate(tasks)
        .scalar_subquery()
    )
    query = (
        sa.select(runs)
        .join(tasks, tasks.c.id == runs.c.task_id)
        .join(ideas, ideas.c.id == tasks.c.idea_id)
        .where(
            tasks.c.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]),
            sa.or_(
                tasks.c.plan_version.is_not(None),
                sa.and_(tasks.c.stage == Stage.PLANNING.value, ideas.c.state == IdeaState.PLANNING.value),
            ),
            runs.c.status.in_(_TERMINAL_RUNS),
            runs.c.attempt == latest,
        )
        .order_by(runs.c.created_at, runs.c.id)
        .limit(limit)
    )
    return [run_from_row(r) for r in conn.execute(query)]


def read_ideas_to_plan(conn: sa.Connection, limit: int) -> list[uuid.UUID]:
    query = (
        sa.select(ideas.c.id)
        .where(
            ideas.c.state == IdeaState.REGISTERED.value,
            ideas.c.source.in_(sorted(source.value for source in PLANNED_SOURCES)),
            ~sa.exists().where(tasks.c.idea_id == ideas.c.id),
        )
        .order_by(ideas.c.created_at, ideas.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def insert_tasks(
    conn: sa.Connection,
    idea_id: uuid.UUID,
    specs: Sequence[TaskSpec],
    *,
    at: datetime,
    plan_version: int | None,
    priority: int,
    known: Mapping[str, uuid.UUID] | None = None,
) -> None:
    """Create an idea's tasks in plan order, with their dependencies (by key, on each other or on the
    ``known`` tasks); implementation tasks carry ``plan_version``."""
    conn.execute(
        sa.insert(tasks),
        [
            {
                "id": spec.id,
                "idea_id": idea_id,
                "key": spec.key,
                "title": spec.title,
                "stage": spec.stage.value,
                "state": spec.state.value,
                "attempts": 0,
                "created_at": at,
                "updated_at": at,
                "description": spec.description,
                "acceptance_criteria": list(spec.acceptance_criteria),
                "paths": list(spec.paths),
                "heavy": spec.heavy,
                "plan_version": plan_version if spec.stage is Stage.IMPLEMENTATION else None,
                "position": position,
                "priority": priority,
            }
            for position, spec in enumerate(specs)
        ],
    )
    id_of = dict(known or {})
    id_of.update({spec.key: spec.id for spec in specs})
    edges = [
        {"task_id": spec.id, "depends_on_task_id": id_of[key]} for spec in specs for key in spec.depends_on
    ]
    if edges:
        conn.execute(sa.insert(task_dependencies), edges)


def _change_tasks(conn: sa.Connection, changes: Sequence[TaskChange], now: datetime) -> None:
    for change in changes:
        values: dict[str, Any] = {
            "state": change.state.value,
            "not_before": change.not_before,
            "claimed_by": change.claimed_by,
            "claim_expires_at": change.claim_expires_at,
            "updated_at": now,
        }
        if change.attempts is not None:
            values["attempts"] = change.attempts
        conn.execute(sa.update(tasks).where(tasks.c.id == change.task_id).values(**values))


def _insert_run(conn: sa.Connection, idea_id: uuid.UUID, new: NewRun, now: datetime) -> Run:
    conn.execute(
        sa.insert(runs).values(
            id=new.id,
            idea_id=idea_id,
            task_id=new.task_id,
            stage=new.stage.value,
            delivery_id=new.delivery_id,
            status=RunStatus.QUEUED.value,
            executor=new.executor,
            workflow_name=new.workflow_name,
            namespace=new.namespace,
            event_body=new.event_body,
            raw_event=new.raw_event,
            created_at=now,
            attempt=new.attempt,
        )
    )
    return new_run(new, idea_id, now)


def _with_state(idea: Idea, state: IdeaState) -> Idea:
    return dataclasses.replace(idea, state=state)
