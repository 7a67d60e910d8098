"""What the orchestrator decides about one idea, as pure functions of its recorded state.

Each function takes the idea as the store holds it (:class:`IdeaDetail`, read inside the transaction that
applies the result) and returns an :class:`IdeaChange`: the moves of the idea and its tasks, the runs to
create or stop, and the audit events that record every decision. Moves are checked against the transition
tables (:mod:`facteur.domain.lifecycle`); a move the tables refuse raises
:class:`~facteur.domain.lifecycle.IllegalTransition` and nothing is written. No I/O here: the driver
(:mod:`facteur.orchestrator.driver`) applies the change, then talks to the executor and the scheduler.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from facteur.bus.port import Message
from facteur.domain.approvals import ApprovalNeed
from facteur.domain.events import NewEvent
from facteur.domain.ideas import IdeaState
from facteur.domain.lifecycle import IDEA_TRANSITIONS, Pipeline, next_idea_state, transition
from facteur.domain.plans import Plan, plan_from_json
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState
from facteur.errors import Conflict, InvalidInput, NotFound
from facteur.store.port import (
    ApprovalDraft,
    IdeaChange,
    IdeaDetail,
    NewRun,
    PlanVersionDraft,
    RunUpdate,
    TaskChange,
    TaskSpec,
)

ACTOR = "orchestrator"

#: run statuses that spend an attempt of their task
_FAILED_RUN = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST, RunStatus.CANCELLED})
_LIVE_TASK = frozenset({TaskState.QUEUED, TaskState.RUNNING})
_LIVE_RUN = (RunStatus.QUEUED, RunStatus.SUBMITTED, RunStatus.RUNNING)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int
    backoff_seconds: float
    max_backoff_seconds: float
    #: what exhausting a task's attempts does to its idea: ``fail`` it, or ``block`` the task
    on_exhausted: str = "fail"

    def backoff(self, attempts: int) -> timedelta:
        """The wait before attempt ``attempts + 1``: the base, doubled with each further attempt, capped."""
        seconds = self.backoff_seconds * (2 ** max(0, attempts - 1))
        return timedelta(seconds=min(seconds, self.max_backoff_seconds))


class Refused(Conflict):
    """A request that the idea's state does not allow (answered 409), with the reason."""


def idea_moved(
    idea_id: uuid.UUID, actor: str, current: IdeaState, target: IdeaState, trigger: str, **detail: Any
) -> NewEvent:
    """The ``idea.transition`` event of a move the idea table allows (raises :class:`IllegalTransition`
    otherwise), with the states it skips."""
    move = transition("idea", current, target, trigger)
    payload: dict[str, Any] = {"from": current.value, "to": target.value, "trigger": trigger, **detail}
    if move.skips:
        payload["skipped"] = [state.value for state in move.skips]
    return NewEvent(kind="idea.transition", actor=actor, payload=payload, idea_id=idea_id)


def task_moved(task: Task, actor: str, target: TaskState, trigger: str, **detail: Any) -> NewEvent:
    """The ``task.transition`` event of a move the task table allows (raises :class:`IllegalTransition`
    otherwise)."""
    transition("task", task.state, target, trigger)
    payload: dict[str, Any] = {
        "key": task.key,
        "from": task.state.value,
        "to": target.value,
        "trigger": trigger,
        **detail,
    }
    return NewEvent(
        kind="task.transition", actor=actor, payload=payload, idea_id=task.idea_id, task_id=task.id
    )


@dataclass(frozen=True, slots=True)
class StageRuns:
    """Builds the runs of the orchestrator's own stages after the tasks: (draft, task, attempt) -> run."""

    new_id: Callable[[], uuid.UUID]
    review: Callable[[Draft, Task, int], NewRun]


class Draft:
    """A change being decided: the idea's and its tasks' states as the decisions so far leave them."""

    def __init__(
        self, detail: IdeaDetail, *, actor: str, now: datetime, stage_runs: StageRuns | None = None
    ) -> None:
        self.detail = detail
        #: how runs of the stages after the tasks are built; without it such a stage waits for a person
        self.stage_runs = stage_runs
        self.idea = detail.idea
        self.actor = actor
        self.now = now
        self.state = detail.idea.state
        self.tasks: dict[uuid.UUID, Task] = {view.task.id: view.task for view in detail.tasks}
        self.depends: dict[uuid.UUID, tuple[str, ...]] = {
            view.task.id: view.depends_on for view in detail.tasks
        }
        self.events: list[NewEvent] = []
        self.messages: list[Message] = []
        self.task_changes: dict[uuid.UUID, TaskChange] = {}
        self.new_tasks: list[TaskSpec] = []
        self.runs: list[NewRun] = []
        self.run_updates: list[tuple[uuid.UUID, RunUpdate]] = []

    # --- recording -----------------------------------------------------------------------------------------

    def event(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        task_id: uuid.UUID | None = None,
        run_id: uuid.UUID | None = None,
    ) -> None:
        self.events.append(
            NewEvent(
                kind=kind,
                actor=self.actor,
                payload=dict(payload),
                idea_id=self.idea.id,
                task_id=task_id,
                run_id=run_id,
            )
        )

    def move_idea(self, target: IdeaState, trigger: str, **detail: Any) -> None:
        self.events.append(idea_moved(self.idea.id, self.actor, self.state, target, trigger, **detail))
        self.state = target

    def move_task(
        self,
        task: Task,
        target: TaskState,
        trigger: str,
        *,
        attempts: int | None = None,
        not_before: datetime | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Task:
        """Move a task (checked against the task table) and record it; the claim is cleared."""
        current = self.tasks[task.id]
        extra = {k: v for k, v in (detail or {}).items() if v is not None}
        if not_before is not None:
            extra["not_before"] = not_before.isoformat()
        self.events.append(task_moved(current, self.actor, target, trigger, **extra))
        change = TaskChange(task_id=task.id, state=target, attempts=attempts, not_before=not_before)
        self.task_changes[task.id] = change
        moved = _replace_task(current, change)
        self.tasks[task.id] = moved
        return moved

    def stop_run(self, run: Run, reason: str) -> None:
        self.run_updates.append(
            (
                run.id,
                RunUpdate(
                    status=RunStatus.CANCELLED, expected=_LIVE_RUN, finished_at=self.now, detail=reason[:500]
                ),
            )
        )
        self.event(
            "run.cancelled",
            {"reason": reason, "workflow": run.workflow_name},
            task_id=run.task_id,
            run_id=run.id,
        )

    def change(self, **extra: Any) -> IdeaChange:
        return IdeaChange(
            state=self.state if self.state is not self.idea.state else None,
            tasks=list(self.task_changes.values()),
            new_tasks=self.new_tasks,
            runs=self.runs,
            run_updates=self.run_updates,
            events=self.events,
            messages=self.messages,
            **extra,
        )

    # --- reading -------------------------------------------------------------------------------------------

    def plan_tasks(self) -> list[Task]:
        """The tasks built from the approved plan, in plan order."""
        version = self.idea.plan_version
        return [t for t in self.tasks.values() if t.plan_version is not None and t.plan_version == version]

    def live_runs(self) -> list[Run]:
        return [run for run in self.detail.runs if not run.status.terminal]

    def latest_run(self, task_id: uuid.UUID) -> Run | None:
        own = [run for run in self.detail.runs if run.task_id == task_id]
        return max(own, key=lambda run: (run.attempt, run.created_at)) if own else None


# --- plans and the approval gate ----------------------------------------------------------------------------


def tasks_from_plan(plan: Plan, new_id: Callable[[], uuid.UUID]) -> list[TaskSpec]:
    """The plan's tasks, ready when they depend on nothing, pending otherwise."""
    return [
        TaskSpec(
            id=new_id(),
            key=task.key,
            title=task.title,
            description=task.description,
            depends_on=tuple(task.depends_on),
            acceptance_criteria=tuple(task.acceptance_criteria),
            paths=tuple(task.paths),
            heavy=task.heavy,
            state=TaskState.PENDING if task.depends_on else TaskState.READY,
        )
        for task in plan.tasks
    ]


def gate(
    draft: Draft, need: ApprovalNeed, version: int, plan: Plan, new_id: Callable[[], uuid.UUID]
) -> IdeaChange:
    """From ``plan_ready``: wait for a person, or approve automatically and build the tasks."""
    if need.required:
        draft.move_idea(IdeaState.AWAITING_APPROVAL, "approval_requested")
        draft.event("approval.requested", {"plan_version": version, "reason": need.reason})
        return draft.change()
    draft.event("approval.automatic", {"plan_version": version, "reason": need.reason})
    draft.move_idea(IdeaState.AWAITING_DEPENDENCIES, "approval_not_required")
    draft.new_tasks = tasks_from_plan(plan, new_id)
    return draft.change(
        plan_version=version,
        approval=ApprovalDraft(
            id=new_id(), plan_version=version, decision="automatic", decided_by=ACTOR, reason=need.reason
        ),
    )


def receive_plan(
    draft: Draft,
    *,
    version: int,
    plan: Plan,
    need: ApprovalNeed,
    new_id: Callable[[], uuid.UUID],
    stored: PlanVersionDraft | None = None,
) -> IdeaChange:
    """A new plan version (from a planning run, a plan comment or the API): an idea still planning moves
    to ``plan_ready`` and through the gate; one awaiting approval keeps waiting, now for this version; later
    versions of an idea past approval are kept, not applied."""
    extra: dict[str, Any] = {} if stored is None else {"plan": stored}
    state = draft.state
    draft.event("plan.received", {"plan_version": version, "tasks": len(plan.tasks)})
    if state is IdeaState.PLANNING and stored is not None:
        # a plan came from elsewhere (a person, a comment) while a planning run works: that run is moot
        for task in list(draft.tasks.values()):
            if task.stage == Stage.PLANNING.value and task.state in _LIVE_TASK:
                why = f"a plan arrived from {stored.source}"
                draft.move_task(task, TaskState.CANCELLED, "cancel", detail={"reason": why})
                for run in draft.live_runs():
                    if run.task_id == task.id:
                        draft.stop_run(run, why)
    if state in {IdeaState.REGISTERED, IdeaState.PLANNING}:
        trigger = "plan_provided" if state is IdeaState.REGISTERED else "plan_received"
        draft.move_idea(IdeaState.PLAN_READY, trigger, plan_version=version)
        change = gate(draft, need, version, plan, new_id)
        return dataclasses.replace(change, **extra)
    if state is IdeaState.AWAITING_APPROVAL:
        draft.event("approval.requested", {"plan_version": version, "reason": "a new plan version"})
    else:
        draft.event("plan.not_applied", {"plan_version": version, "state": state.value})
    return draft.change(**extra)


def decide_approval(
    draft: Draft,
    *,
    approve: bool,
    version: int | None,
    by: str,
    reason: str | None,
    new_id: Callable[[], uuid.UUID],
) -> IdeaChange:
    """A person's decision on the plan of an idea awaiting approval (the latest version unless named)."""
    if draft.state is not IdeaState.AWAITING_APPROVAL:
        raise Refused(
            f"idea {draft.idea.id} is {draft.state.value}: only an idea awaiting approval can be decided"
        )
    versions = {plan.version: plan for plan in draft.detail.plans}
    if not versions:
        raise Refused(f"idea {draft.idea.id} has no plan to approve")
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise InvalidInput(f"idea {draft.idea.id} has no plan version {chosen}: it has {sorted(versions)}")
    decision = "approved" if approve else "rejected"
    approval = ApprovalDraft(
        id=new_id(), plan_version=chosen, decision=decision, decided_by=by, reason=reason
    )
    draft.event(f"approval.{decision}", {"plan_version": chosen, "by": by, "reason": reason})
    if not approve:
        _end(draft, IdeaState.CANCELLED, "rejected", reason or f"plan rejected by {by}")
        return draft.change(approval=approval)
    draft.move_idea(IdeaState.AWAITING_DEPENDENCIES, "approved", plan_version=chosen)
    draft.new_tasks = tasks_from_plan(plan_from_json(versions[chosen].document), new_id)
    return draft.change(approval=approval, plan_version=chosen)


# --- runs ending --------------------------------------------------------------------------------------------


#: builds the next planning run of a planning task: (task, attempt) -> the run
PlanningRun = Callable[[Task, int], NewRun]


def start_planning(draft: Draft, *, task_id: uuid.UUID, planning_run: PlanningRun) -> IdeaChange:
    """A registered idea without a plan: a planning task and its first run."""
    if draft.state is not IdeaState.REGISTERED or draft.tasks:
        return draft.change()
    draft.move_idea(IdeaState.PLANNING, "planning_started")
    task = _stage_task(draft, task_id, Stage.PLANNING, f"Plan: {draft.idea.title}")
    run = planning_run(task, 1)
    draft.runs.append(run)
    draft.event("run.created", {"stage": "planning", "attempt": 1}, task_id=task_id, run_id=run.id)
    return draft.change()


def settle_run(
    draft: Draft,
    run_id: uuid.UUID,
    *,
    policy: RetryPolicy,
    pipeline: Pipeline,
    planning_run: PlanningRun,
    stored_plan: Callable[[Draft, int], IdeaChange] | None = None,
) -> IdeaChange:
    """React to a run's status: its task starts, succeeds (its dependents become ready; the idea moves on
    when every task is done) or fails (retried after a back-off while attempts remain, then the idea fails
    or the task blocks). A run that is not its task's latest, or whose task has moved on, changes
    nothing."""
    run = next((r for r in draft.detail.runs if r.id == run_id), None)
    if run is None:
        raise NotFound(f"run {run_id} is not one of idea {draft.idea.id}'s")
    task = draft.tasks.get(run.task_id)
    latest = draft.latest_run(run.task_id)
    if task is None or latest is None or latest.id != run.id or task.state not in _LIVE_TASK:
        return draft.change()
    if IDEA_TRANSITIONS.is_terminal(draft.idea.state):
        return draft.change()
    # the orchestrator's own tasks: plan tasks, and the planning task of an idea it is planning
    planning = task.stage == Stage.PLANNING.value and draft.state is IdeaState.PLANNING
    reviewing = task.stage == Stage.REVIEW.value and draft.state is IdeaState.QA_REVIEW
    retried = task.plan_version is not None or planning or reviewing
    if run.status is RunStatus.RUNNING and task.state is TaskState.QUEUED:
        draft.move_task(task, TaskState.RUNNING, "started", detail={"run": str(run.id)})
    elif run.status is RunStatus.SUCCEEDED:
        if planning:
            sent = [p for p in draft.detail.plans if p.source == "run" and p.created_at >= run.created_at]
            if sent and stored_plan is not None:  # its plan was stored, the reaction to it was lost
                draft.move_task(task, TaskState.SUCCEEDED, "completed", detail={"run": str(run.id)})
                return stored_plan(draft, sent[-1].version)
            why = "the planning run ended without sending a valid plan"
            return _task_failed(draft, task, run, policy, planning_run, why=why)
        draft.move_task(task, TaskState.SUCCEEDED, "completed", detail={"run": str(run.id)})
        if reviewing:
            _advance(draft, pipeline, "review_passed")
        elif task.plan_version is not None:
            _release_dependents(draft)
            _advance_if_done(draft, pipeline)
    elif run.status in _FAILED_RUN:
        why = run.detail or f"run {run.status.value}"
        if not retried:
            draft.move_task(task, TaskState.FAILED, "failed", detail={"run": str(run.id), "reason": why})
            return draft.change()
        return _task_failed(draft, task, run, policy, planning_run, why=why)
    return draft.change()


def _task_failed(
    draft: Draft, task: Task, run: Run, policy: RetryPolicy, planning_run: PlanningRun, *, why: str
) -> IdeaChange:
    planning = task.stage == Stage.PLANNING.value
    reviewing = task.stage == Stage.REVIEW.value and draft.stage_runs is not None
    # a plan task's budget is its own count (an operator's retry renews it); a planning task counts runs
    attempts = task.attempts if task.plan_version is not None else max(task.attempts, run.attempt)
    if attempts < policy.max_attempts:
        draft.move_task(task, TaskState.FAILED, "failed", detail={"run": str(run.id), "reason": why})
        if planning or reviewing:  # run again at once: these runs are not scheduled tasks
            draft.move_task(
                task, TaskState.READY, "retry", attempts=attempts, detail={"attempt": attempts + 1}
            )
            if reviewing and draft.idea.paused:  # held until the idea resumes
                return draft.change()
            draft.move_task(task, TaskState.QUEUED, "claimed", attempts=attempts + 1)
            if planning:
                again = planning_run(task, attempts + 1)
            else:
                assert draft.stage_runs is not None
                again = draft.stage_runs.review(draft, task, attempts + 1)
            draft.runs.append(again)
            draft.event(
                "run.created",
                {"stage": task.stage, "attempt": attempts + 1},
                task_id=task.id,
                run_id=again.id,
            )
            return draft.change()
        wait = policy.backoff(attempts)
        not_before = draft.now + wait
        draft.move_task(
            task,
            TaskState.READY,
            "retry",
            attempts=attempts,
            not_before=not_before,
            detail={"attempt": attempts + 1, "backoff_seconds": wait.total_seconds()},
        )
        return draft.change()
    reason = f"task {task.key} failed {attempts} time(s), the limit: {why}"
    if policy.on_exhausted == "block" and not planning and not reviewing:
        draft.move_task(task, TaskState.BLOCKED, "blocked", detail={"run": str(run.id), "reason": reason})
        draft.event("idea.stalled", {"reason": reason})
        return draft.change()
    draft.move_task(task, TaskState.FAILED, "failed", detail={"run": str(run.id), "reason": why})
    _end(draft, IdeaState.FAILED, "failed", reason)
    return draft.change()


def _release_dependents(draft: Draft) -> None:
    done = {t.key for t in draft.tasks.values() if t.state is TaskState.SUCCEEDED}
    for task in draft.plan_tasks():
        deps = draft.depends[task.id]
        if task.state is TaskState.PENDING and all(key in done for key in deps):
            draft.move_task(task, TaskState.READY, "dependencies_met", detail={"after": list(deps)})


def _advance_if_done(draft: Draft, pipeline: Pipeline) -> None:
    tasks = draft.plan_tasks()
    if not tasks or draft.state not in {IdeaState.RUNNING_TASKS, IdeaState.AWAITING_DEPENDENCIES}:
        return
    if all(t.state is TaskState.CANCELLED for t in tasks):
        _end(draft, IdeaState.CANCELLED, "cancel", "every task of the plan was cancelled")
        return
    if all(t.state in {TaskState.SUCCEEDED, TaskState.CANCELLED} for t in tasks) and any(
        t.state is TaskState.SUCCEEDED for t in tasks
    ):
        if draft.state is IdeaState.AWAITING_DEPENDENCIES:
            draft.move_idea(IdeaState.RUNNING_TASKS, "dependencies_met")
        _advance(draft, pipeline, "tasks_succeeded")


def _advance(draft: Draft, pipeline: Pipeline, trigger: str) -> None:
    """The idea's current stage is done: on to the next one its pipeline holds (recording the skipped ones),
    starting the review run when that is next."""
    advance = next_idea_state(draft.state, pipeline)
    for skipped in advance.skipped:
        draft.event("stage.skipped", {"stage": skipped.value, "reason": "not in the repository's pipeline"})
    draft.move_idea(advance.state, trigger)
    if advance.state is IdeaState.QA_REVIEW:
        _start_review(draft)


def _start_review(draft: Draft) -> None:
    """A review task (key ``review``) and its first run: it reviews the branches no task builds on."""
    if draft.stage_runs is None:
        draft.event("review.waiting", {"reason": "no review runs can be built here"})
        return
    if any(t.stage == Stage.REVIEW.value and t.key == "review" for t in draft.tasks.values()):
        return
    paused = draft.idea.paused  # nothing new runs for a paused idea: the review starts when it resumes
    task = _stage_task(
        draft,
        draft.stage_runs.new_id(),
        Stage.REVIEW,
        f"Review: {draft.idea.title}",
        state=TaskState.READY if paused else TaskState.QUEUED,
    )
    if paused:
        draft.event("review.held", {"reason": "the idea is paused"}, task_id=task.id)
        return
    _review_run(draft, task, 1)


def _review_run(draft: Draft, task: Task, attempt: int) -> None:
    assert draft.stage_runs is not None
    run = draft.stage_runs.review(draft, task, attempt)
    draft.runs.append(run)
    draft.event("run.created", {"stage": "review", "attempt": attempt}, task_id=task.id, run_id=run.id)


def _held_review(draft: Draft) -> None:
    """A resumed idea in review whose review run was held while it was paused: start it."""
    if draft.state is not IdeaState.QA_REVIEW or draft.stage_runs is None:
        return
    for task in list(draft.tasks.values()):
        if task.stage == Stage.REVIEW.value and task.state is TaskState.READY:
            attempt = max(task.attempts, 0) + 1
            moved = draft.move_task(task, TaskState.QUEUED, "claimed", attempts=attempt)
            _review_run(draft, moved, attempt)


def _stage_task(
    draft: Draft, task_id: uuid.UUID, stage: Stage, title: str, *, state: TaskState = TaskState.QUEUED
) -> Task:
    """The task of one of the orchestrator's own stages (keyed by the stage's name), queued for its run."""
    spec = TaskSpec(
        id=task_id,
        key=stage.value,
        title=title[:300],
        description="",
        depends_on=(),
        acceptance_criteria=(),
        paths=(),
        heavy=False,
        state=state,
        stage=stage,
    )
    draft.new_tasks = [*draft.new_tasks, spec]
    task = Task(
        id=task_id,
        idea_id=draft.idea.id,
        key=spec.key,
        title=spec.title,
        stage=stage.value,
        state=state,
        attempts=0,
        created_at=draft.now,
        updated_at=draft.now,
    )
    draft.tasks[task_id] = task
    return task


def _end(draft: Draft, target: IdeaState, trigger: str, reason: str | None) -> None:
    """End the idea: its live tasks are cancelled and its runs in flight stopped."""
    draft.move_idea(target, trigger, reason=reason)
    for task in list(draft.tasks.values()):
        if task.state in {
            TaskState.PENDING,
            TaskState.READY,
            TaskState.QUEUED,
            TaskState.RUNNING,
            TaskState.BLOCKED,
        }:
            draft.move_task(task, TaskState.CANCELLED, "cancel")
    for run in draft.live_runs():
        draft.stop_run(run, f"idea {target.value}" + (f": {reason}" if reason else ""))


# --- people's requests --------------------------------------------------------------------------------------


def pause(draft: Draft, *, by: str, reason: str | None, paused: bool) -> IdeaChange:
    if IDEA_TRANSITIONS.is_terminal(draft.idea.state):
        verb = "paused" if paused else "resumed"
        raise Refused(f"idea {draft.idea.id} is {draft.idea.state.value}: a finished idea cannot be {verb}")
    if draft.idea.paused == paused:
        return draft.change()
    draft.event("idea.paused" if paused else "idea.resumed", {"by": by, "reason": reason})
    if not paused:
        _held_review(draft)
    return draft.change(paused=paused)


def cancel(draft: Draft, *, by: str, reason: str | None) -> IdeaChange:
    if draft.idea.state is IdeaState.CANCELLED:
        return draft.change()
    _end(draft, IdeaState.CANCELLED, "cancel", reason or f"cancelled by {by}")
    return draft.change()


def retry_task(draft: Draft, task_id: uuid.UUID, *, by: str, reason: str | None = None) -> IdeaChange:
    """An operator's retry: a failed or blocked task gets a fresh attempt budget, at once."""
    task = _own_task(draft, task_id)
    if IDEA_TRANSITIONS.is_terminal(draft.idea.state):
        raise Refused(f"idea {draft.idea.id} is {draft.idea.state.value}: its tasks cannot be retried")
    if task.plan_version is None:
        raise Refused(
            f"task {task.key} is not a task of the idea's plan: it follows its run, and is not retried"
        )
    done = {t.key for t in draft.tasks.values() if t.state is TaskState.SUCCEEDED}
    cancelled = sorted(k for k in draft.depends[task.id] if _key_state(draft, k) is TaskState.CANCELLED)
    if task.state is TaskState.BLOCKED and cancelled:
        raise Refused(
            f"task {task.key} depends on cancelled task(s) {', '.join(cancelled)}: "
            "it can never run; cancel it"
        )
    if task.state is TaskState.FAILED:
        draft.move_task(task, TaskState.READY, "retry", attempts=0, detail={"by": by, "reason": reason})
    elif task.state is TaskState.BLOCKED:
        target = TaskState.READY if all(k in done for k in draft.depends[task.id]) else TaskState.PENDING
        draft.move_task(task, target, "unblocked", attempts=0, detail={"by": by, "reason": reason})
    else:
        raise Refused(f"task {task.key} is {task.state.value}: only a failed or blocked task can be retried")
    return draft.change()


def cancel_task(
    draft: Draft,
    task_id: uuid.UUID,
    *,
    by: str,
    reason: str | None,
    pipeline: Pipeline,
    for_run: uuid.UUID | None = None,
) -> IdeaChange:
    """Cancel one task: its runs in flight stop, the tasks that depend on it (directly or not) block, and the
    idea moves on when what is left is done. With ``for_run`` (a stuck run), only while that run is its
    task's latest and the task is still in flight; otherwise nothing changes."""
    task = _own_task(draft, task_id)
    if for_run is not None:
        latest = draft.latest_run(task.id)
        if latest is None or latest.id != for_run or task.state not in _LIVE_TASK:
            return draft.change()
    if task.state in {TaskState.SUCCEEDED, TaskState.CANCELLED}:
        raise Refused(f"task {task.key} is {task.state.value}: it cannot be cancelled")
    if task.stage == Stage.PLANNING.value and draft.state is IdeaState.PLANNING:
        raise Refused(
            f"task {task.key} plans idea {draft.idea.id}: cancel the idea, or send a plan "
            "(POST /api/v1/ideas/{id}/plans), instead"
        )
    if task.stage == Stage.REVIEW.value and draft.state is IdeaState.QA_REVIEW:
        raise Refused(f"task {task.key} reviews idea {draft.idea.id}: cancel the idea instead")
    draft.move_task(task, TaskState.CANCELLED, "cancel", detail={"by": by, "reason": reason})
    for run in draft.live_runs():
        if run.task_id == task.id:
            draft.stop_run(run, f"task cancelled by {by}")
    blocked = _dependents(draft, task.key)
    for other in draft.plan_tasks():
        if other.key in blocked and other.state in {TaskState.PENDING, TaskState.READY}:
            draft.move_task(
                other,
                TaskState.BLOCKED,
                "blocked",
                detail={"reason": f"depends on cancelled task {task.key}"},
            )
    _advance_if_done(draft, pipeline)
    moving = {TaskState.PENDING, TaskState.READY, TaskState.QUEUED, TaskState.RUNNING, TaskState.FAILED}
    left = [t for t in draft.plan_tasks() if t.state is not TaskState.SUCCEEDED]
    if draft.state is IdeaState.RUNNING_TASKS and left and not any(t.state in moving for t in left):
        blocked_keys = sorted(t.key for t in left if t.state is TaskState.BLOCKED)
        draft.event("idea.stalled", {"reason": "what is left is blocked", "blocked": blocked_keys})
    return draft.change()


def _key_state(draft: Draft, key: str) -> TaskState | None:
    return next((t.state for t in draft.tasks.values() if t.key == key), None)


def _dependents(draft: Draft, key: str) -> set[str]:
    found: set[str] = set()
    frontier = [key]
    while frontier:
        current = frontier.pop()
        for task_id, deps in draft.depends.items():
            other = draft.tasks[task_id].key
            if current in deps and other not in found:
                found.add(other)
                frontier.append(other)
    return found


def _own_task(draft: Draft, task_id: uuid.UUID) -> Task:
    task = draft.tasks.get(task_id)
    if task is None:
        raise NotFound(f"task {task_id} is not one of idea {draft.idea.id}'s")
    return task


def _replace_task(task: Task, change: TaskChange) -> Task:
    return dataclasses.replace(
        task,
        state=change.state,
        attempts=task.attempts if change.attempts is None else change.attempts,
        not_before=change.not_before,
    )
