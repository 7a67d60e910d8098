"""REST API v1 for ideas: submit, list, show, and the audit timeline. Bearer-protected by
``server.api_token`` (see :func:`require_token`)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from facteur.api.auth import bearer, is_api_token
from facteur.domain.events import Event
from facteur.domain.ideas import REPOSITORY_PATTERN, Idea, IdeaSource, IdeaState
from facteur.orchestrator.ideas import Submission
from facteur.runtime import Runtime
from facteur.store.port import IdeaDetail, IdeaFilter


def require_token(request: Request) -> None:
    """With ``server.api_token`` set, every ``/api`` call needs ``Authorization: Bearer <token>``."""
    runtime: Runtime = request.app.state.runtime
    if runtime.settings.server.api_token is not None and not is_api_token(runtime.settings, bearer(request)):
        raise HTTPException(401, "send Authorization: Bearer <server.api_token>")


router = APIRouter(prefix="/api/v1", tags=["ideas"], dependencies=[Depends(require_token)])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Model):
    tokens: int | None = Field(default=None, ge=0)
    usd: float | None = Field(default=None, ge=0)


class PlanTaskIn(_Model):
    key: str
    title: str
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    acceptance_criteria: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    heavy: bool = False


class PlanIn(_Model):
    tasks: list[PlanTaskIn]
    sections: dict[str, str] | None = None


class IdeaIn(_Model):
    """An idea spec, with an optional plan (markdown as in docs/plans.md, or its JSON form)."""

    title: str = Field(min_length=1, max_length=300)
    goal: str = Field(min_length=1, max_length=20_000)
    repository: str = Field(pattern=REPOSITORY_PATTERN)
    constraints: str = Field(default="", max_length=20_000)
    success_metrics: list[str] = Field(default_factory=list, max_length=50)
    priority: int = Field(default=2, ge=0, le=3)
    risk_labels: list[str] = Field(default_factory=list, max_length=20)
    budget: Budget | None = None
    plan: str | None = Field(default=None, max_length=500_000)
    plan_json: PlanIn | None = None


class TaskOut(BaseModel):
    id: uuid.UUID
    key: str
    title: str
    state: str
    depends_on: list[str]
    heavy: bool
    attempts: int


class RunOut(BaseModel):
    id: uuid.UUID
    task_id: uuid.UUID
    stage: str
    status: str
    attempt: int
    workflow_name: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: what the run reported when it ended
    summary: str | None = None
    branch: str | None = None
    pull_request: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class ApprovalOut(BaseModel):
    plan_version: int
    decision: str
    decided_by: str
    reason: str | None
    at: datetime


class PlanOut(BaseModel):
    version: int
    source: str
    approved: bool
    markdown: str
    document: dict[str, Any]


class CostOut(BaseModel):
    input_tokens: int
    output_tokens: int
    usd: float


class IdeaSummary(BaseModel):
    id: uuid.UUID
    title: str
    state: str
    paused: bool
    repository: str
    source: str
    priority: int
    created_at: datetime


class IdeaOut(IdeaSummary):
    spec: dict[str, Any]
    plan: PlanOut | None
    plan_versions: list[int]
    tasks: list[TaskOut]
    runs: list[RunOut]
    approvals: list[ApprovalOut]
    cost: CostOut


class IdeaPage(BaseModel):
    items: list[IdeaSummary]
    #: pass as ``cursor`` for the next page; null on the last
    next_cursor: str | None


class EventOut(BaseModel):
    seq: int
    kind: str
    actor: str
    at: datetime
    task_id: uuid.UUID | None
    run_id: uuid.UUID | None
    payload: dict[str, Any]
    hash: str


class EventPage(BaseModel):
    items: list[EventOut]
    #: pass as ``after`` for the next page; null when there is no more
    next_after: int | None


def _summary(idea: Idea) -> IdeaSummary:
    return IdeaSummary(
        id=idea.id,
        title=idea.title,
        state=idea.state.value,
        paused=idea.paused,
        repository=idea.repository,
        source=idea.source.value,
        priority=idea.priority,
        created_at=idea.created_at,
    )


def idea_out(detail: IdeaDetail) -> IdeaOut:
    idea = detail.idea
    shown = next((p for p in detail.plans if p.version == idea.plan_version), None)
    if shown is None and detail.plans:
        shown = detail.plans[-1]
    return IdeaOut(
        **_summary(idea).model_dump(),
        spec=dict(detail.spec),
        plan=None
        if shown is None
        else PlanOut(
            version=shown.version,
            source=shown.source,
            approved=shown.version == idea.plan_version,
            markdown=shown.markdown,
            document=dict(shown.document),
        ),
        plan_versions=[p.version for p in detail.plans],
        tasks=[
            TaskOut(
                id=v.task.id,
                key=v.task.key,
                title=v.task.title,
                state=v.task.state.value,
                depends_on=list(v.depends_on),
                heavy=v.task.heavy,
                attempts=v.task.attempts,
            )
            for v in detail.tasks
        ],
        runs=[
            RunOut(
                id=r.id,
                task_id=r.task_id,
                stage=r.stage.value,
                status=r.status.value,
                attempt=r.attempt,
                workflow_name=r.workflow_name,
                created_at=r.created_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
                summary=r.summary,
                branch=r.branch,
                pull_request=r.pull_request,
                input_tokens=r.tokens_in,
                output_tokens=r.tokens_out,
                cost_usd=r.cost_usd,
            )
            for r in detail.runs
        ],
        approvals=[
            ApprovalOut(
                plan_version=a.plan_version,
                decision=a.decision,
                decided_by=a.decided_by,
                reason=a.reason,
                at=a.created_at,
            )
            for a in detail.approvals
        ],
        cost=CostOut(input_tokens=idea.tokens_in, output_tokens=idea.tokens_out, usd=idea.cost_usd),
    )


@router.post("/ideas", status_code=201, response_model=IdeaOut)
async def submit_idea(
    body: IdeaIn,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> IdeaOut:
    """Register an idea. With a plan it skips planning; the plan then waits for approval or, when none is
    required, its tasks are built at once. ``Idempotency-Key`` makes a retry find the first idea (200)."""
    runtime: Runtime = request.app.state.runtime
    if body.plan is not None and body.plan_json is not None:
        raise HTTPException(400, "give the plan as markdown (plan) or as JSON (plan_json), not both")
    submitted = await runtime.ideas.submit(
        Submission(
            title=body.title,
            goal=body.goal,
            repository=body.repository,
            constraints=body.constraints,
            success_metrics=tuple(body.success_metrics),
            priority=body.priority,
            risk_labels=tuple(label.strip().lower() for label in body.risk_labels if label.strip()),
            budget=None if body.budget is None else body.budget.model_dump(),
            plan_markdown=body.plan,
            plan_json=None if body.plan_json is None else body.plan_json.model_dump(exclude_none=True),
            idempotency_key=idempotency_key,
        )
    )
    if not submitted.created:
        response.status_code = 200
    return idea_out(submitted.detail)


@router.get("/ideas", response_model=IdeaPage)
async def list_ideas(
    request: Request,
    *,
    state: Annotated[list[IdeaState] | None, Query()] = None,
    repository: str | None = None,
    source: IdeaSource | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> IdeaPage:
    """Ideas, newest first, filtered by state (repeatable), repository and source."""
    runtime: Runtime = request.app.state.runtime
    before = _decode_cursor(cursor) if cursor else None
    found = await runtime.store.list_ideas(
        IdeaFilter(states=state or (), repository=repository, source=source, limit=limit + 1, before=before)
    )
    page = found[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(found) > limit else None
    return IdeaPage(items=[_summary(i) for i in page], next_cursor=next_cursor)


@router.get("/ideas/{idea_id}", response_model=IdeaOut)
async def show_idea(idea_id: uuid.UUID, request: Request) -> IdeaOut:
    """The idea with its plan, tasks and their dependencies, runs, approvals and cost."""
    runtime: Runtime = request.app.state.runtime
    return idea_out(await runtime.store.idea_detail(idea_id))  # an unknown idea: NotFound, 404


@router.get("/ideas/{idea_id}/events", response_model=EventPage)
async def idea_events(
    idea_id: uuid.UUID,
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage:
    """The idea's audit timeline, oldest first."""
    runtime: Runtime = request.app.state.runtime
    await runtime.store.get_idea(idea_id)  # an unknown idea: NotFound, 404
    events = await runtime.store.list_events(idea_id=idea_id, after_seq=after, limit=limit + 1)
    page = events[:limit]
    return EventPage(
        items=[_event_out(e) for e in page], next_after=page[-1].seq if len(events) > limit else None
    )


def _event_out(event: Event) -> EventOut:
    return EventOut(
        seq=event.seq,
        kind=event.kind,
        actor=event.actor,
        at=event.created_at,
        task_id=event.task_id,
        run_id=event.run_id,
        payload=dict(event.payload),
        hash=event.hash,
    )


def _encode_cursor(idea: Idea) -> str:
    raw = f"{idea.created_at.isoformat()}|{idea.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, idea_id = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(idea_id)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "cursor is not one this API gave") from None
