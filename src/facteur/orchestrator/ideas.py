"""Ideas submitted whole (REST API, CLI): checked, their plan parsed, the approval gate applied and, when
the plan needs no approval, their tasks built from it, all recorded in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facteur.clock import Clock, Ids
from facteur.domain.events import NewEvent
from facteur.domain.idea_spec import IdeaSpec
from facteur.domain.ideas import Idea, IdeaSource, IdeaState
from facteur.domain.plans import Plan, parse_plan, plan_from_json, plan_to_json, render_plan
from facteur.errors import Conflict
from facteur.orchestrator.decisions import Draft, receive_plan
from facteur.orchestrator.intent import intent_message
from facteur.settings import ApprovalSettings
from facteur.store.port import (
    IdeaChange,
    IdeaCreation,
    IdeaDetail,
    IdeaDraft,
    PlanVersionDraft,
    Store,
)
from facteur.store.rows import new_idea

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
        #: told about each idea created (the lifecycle driver plans it or wakes the scheduler)
        self.on_created: Callable[[Idea], Awaitable[None]] | None = None

    async def submit(self, submission: Submission) -> Submitted:
        """Record the idea; raise :class:`facteur.domain.plans.InvalidPlan` for a bad plan."""
        source_ref = f"{submission.source.value}:{submission.idempotency_key or self._ids.new_id()}"
        known = await self._store.find_idea(submission.source, source_ref)
        if known is not None:
            return Submitted(await self._store.idea_detail(known.id), created=False)
        plan = _plan(submission)
        idea_id = self._ids.new_id()
        now = self._clock.now()
        stated = IdeaSpec(
            goal=submission.goal,
            constraints=submission.constraints,
            success_metrics=tuple(submission.success_metrics),
            priority=submission.priority,
            risk_labels=tuple(submission.risk_labels),
        )
        spec = {
            **stated.to_json(),
            "budget": dict(submission.budget) if submission.budget else None,
            **submission.extra,
        }
        registered = NewEvent(
            kind="idea.registered",
            actor=ACTOR,
            payload={
                "source": submission.source.value,
                "title": submission.title,
                "by": submission.initiator,
            },
            idea_id=idea_id,
        )
        draft_idea = IdeaDraft(
            id=idea_id,
            source=submission.source,
            source_ref=source_ref,
            repository=submission.repository,
            title=submission.title,
            initiator=submission.initiator,
            priority=submission.priority,
            spec=spec,
        )
        change = IdeaChange()
        if plan is not None:
            markdown = submission.plan_markdown or render_plan(plan)
            # the gate decided as for any plan version, on the idea as it will be created
            draft = Draft(
                IdeaDetail(
                    idea=new_idea(draft_idea, now), spec=spec, plans=[], tasks=[], runs=[], approvals=[]
                ),
                actor=ACTOR,
                now=now,
            )
            change = receive_plan(
                draft,
                version=1,
                plan=plan,
                need=self._approvals.need(submission.repository, submission.risk_labels),
                new_id=self._ids.new_id,
                stored=PlanVersionDraft(source="api", markdown=markdown, document=plan_to_json(plan)),
            )
        state = change.state or IdeaState.REGISTERED
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
                    idea=dataclasses.replace(draft_idea, state=state),
                    at=now,
                    plan=change.plan,
                    approval=change.approval,
                    plan_version=change.plan_version,
                    tasks=change.new_tasks,
                    events=[registered, *change.events],
                    messages=[intent],
                )
            )
        except Conflict:  # the same idempotency key, submitted concurrently
            known = await self._store.find_idea(submission.source, source_ref)
            if known is None:  # pragma: no cover - the conflicting idea is committed
                raise
            return Submitted(await self._store.idea_detail(known.id), created=False)
        if self.on_created is not None:
            await self.on_created(idea)
        return Submitted(await self._store.idea_detail(idea.id), created=True)


def _plan(submission: Submission) -> Plan | None:
    if submission.plan_markdown is not None:
        return parse_plan(submission.plan_markdown)
    if submission.plan_json is not None:
        return plan_from_json(submission.plan_json)
    return None
