"""Ideas submitted whole (REST API, CLI): checked, their plan parsed, the approval gate applied and, when
the plan needs no approval, their tasks built from it, all recorded in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facteur.clock import Clock, Ids
from facteur.domain.approvals import approval_need
from facteur.domain.events import NewEvent
from facteur.domain.ideas import IdeaSource, IdeaState
from facteur.domain.lifecycle import transition
from facteur.domain.plans import Plan, parse_plan, plan_from_json, plan_to_json, render_plan
from facteur.domain.tasks import TaskState
from facteur.errors import Conflict
from facteur.orchestrator.intent import intent_message
from facteur.settings import ApprovalSettings
from facteur.store.port import (
    ApprovalDraft,
    IdeaCreation,
    IdeaDetail,
    IdeaDraft,
    PlanVersionDraft,
    Store,
    TaskSpec,
)

ACTOR = "orchestrator"


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    title: str
    goal: str
    repository: str
    constraints: str = ""
    success_metrics: tuple[str, ...] = ()
    priority: int = 2
    risk_labels: tuple[str, ...] = ()
    budget: Mapping[str, Any] | None = None
    #: the plan as markdown (docs/plans.md) or as its JSON form
    plan_markdown: str | None = None
    plan_json: Mapping[str, Any] | None = None
    initiator: str = "api"
    source: IdeaSource = IdeaSource.API
    #: makes a submission idempotent: the same key finds the idea made the first time
    idempotency_key: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submitted:
    detail: IdeaDetail
    #: False when the idempotency key found the idea made before
    created: bool


class Ideas:
    def __init__(
        self, *, store: Store, clock: Clock, ids: Ids, approvals: ApprovalSettings, intent_topic: str
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._approvals = approvals
        self._intent_topic = intent_topic

    async def submit(self, submission: Submission) -> Submitted:
        """Record the idea; raise :class:`facteur.domain.plans.InvalidPlan` for a bad plan."""
        source_ref = f"{submission.source.value}:{submission.idempotency_key or self._ids.new_id()}"
        known = await self._store.find_idea(submission.source, source_ref)
        if known is not None:
            return Submitted(await self._store.idea_detail(known.id), created=False)
        plan = _plan(submission)
        idea_id = self._ids.new_id()
        now = self._clock.now()
        spec = {
            "goal": submission.goal,
            "constraints": submission.constraints,
            "success_metrics": list(submission.success_metrics),
            "risk_labels": list(submission.risk_labels),
            "budget": dict(submission.budget) if submission.budget else None,
            **submission.extra,
        }
        events = [
            NewEvent(
                kind="idea.registered",
                actor=ACTOR,
                payload={
                    "source": submission.source.value,
                    "title": submission.title,
                    "by": submission.initiator,
                },
                idea_id=idea_id,
            )
        ]
        state = IdeaState.REGISTERED
        approval: ApprovalDraft | None = None
        tasks: list[TaskSpec] = []
        plan_draft: PlanVersionDraft | None = None
        if plan is not None:
            document = plan_to_json(plan)
            markdown = submission.plan_markdown or render_plan(plan)
            plan_draft = PlanVersionDraft(source="api", markdown=markdown, document=document)
            state = self._move(events, idea_id, state, IdeaState.PLAN_READY, "plan_provided")
            need = approval_need(
                repository=submission.repository,
                risk_labels=submission.risk_labels,
                required=self._approvals.required,
                repositories=self._approvals.repositories,
                high_risk_labels=self._approvals.high_risk_labels,
            )
            if need.required:
                state = self._move(events, idea_id, state, IdeaState.AWAITING_APPROVAL, "approval_requested")
                events.append(
                    NewEvent(
                        kind="approval.requested",
                        actor=ACTOR,
                        payload={"plan_version": 1, "reason": need.reason},
                        idea_id=idea_id,
                    )
                )
            else:
                approval = ApprovalDraft(
                    id=self._ids.new_id(),
                    plan_version=1,
                    decision="automatic",
                    decided_by=ACTOR,
                    reason=need.reason,
                )
                events.append(
                    NewEvent(
                        kind="approval.automatic",
                        actor=ACTOR,
                        payload={"plan_version": 1, "reason": need.reason},
                        idea_id=idea_id,
                    )
                )
                state = self._move(
                    events, idea_id, state, IdeaState.AWAITING_DEPENDENCIES, "approval_not_required"
                )
                tasks = self._tasks(plan)
        intent = intent_message(
            self._intent_topic,
            idea_id,
            source=submission.source,
            source_ref=source_ref,
            repository=submission.repository,
            title=submission.title,
            priority=submission.priority,
            state=state,
            spec=spec,
        )
        try:
            idea = await self._store.create_idea(
                IdeaCreation(
                    idea=IdeaDraft(
                        id=idea_id,
                        source=submission.source,
                        source_ref=source_ref,
                        repository=submission.repository,
                        title=submission.title,
                        initiator=submission.initiator,
                        priority=submission.priority,
                        spec=spec,
                        state=state,
                    ),
                    at=now,
                    plan=plan_draft,
                    approval=approval,
                    tasks=tasks,
                    events=events,
                    messages=[intent],
                )
            )
        except Conflict:  # the same idempotency key, submitted concurrently
            known = await self._store.find_idea(submission.source, source_ref)
            if known is None:  # pragma: no cover - the conflicting idea is committed
                raise
            return Submitted(await self._store.idea_detail(known.id), created=False)
        return Submitted(await self._store.idea_detail(idea.id), created=True)

    def _move(
        self,
        events: list[NewEvent],
        idea_id: uuid.UUID,
        current: IdeaState,
        target: IdeaState,
        trigger: str,
    ) -> IdeaState:
        """Check the move against the idea table and record it, with the states the table says it skips."""
        move = transition("idea", current, target, trigger)
        payload: dict[str, Any] = {"from": current.value, "to": move.target.value, "trigger": move.trigger}
        if move.skips:
            payload["skipped"] = [state.value for state in move.skips]
        events.append(NewEvent(kind="idea.transition", actor=ACTOR, payload=payload, idea_id=idea_id))
        return move.target

    def _tasks(self, plan: Plan) -> list[TaskSpec]:
        return [
            TaskSpec(
                id=self._ids.new_id(),
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


def _plan(submission: Submission) -> Plan | None:
    if submission.plan_markdown is not None:
        return parse_plan(submission.plan_markdown)
    if submission.plan_json is not None:
        return plan_from_json(submission.plan_json)
    return None
