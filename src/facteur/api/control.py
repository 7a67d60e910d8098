"""REST API v1: what people do to an idea once it exists — pause, resume, cancel, decide on its plan, send
a new plan version — and to one of its tasks: retry, cancel. Each answers the idea as ``GET
/api/v1/ideas/{id}`` shows it; a request the idea's state does not allow answers 409 naming the state."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from facteur.api.ideas import IdeaOut, PlanIn, idea_out, require_token
from facteur.orchestrator.driver import Driver
from facteur.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["control"], dependencies=[Depends(require_token)])

#: who a request is recorded as when it names no one
DEFAULT_ACTOR = "api"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reason(_Model):
    reason: str | None = Field(default=None, max_length=2000)
    #: recorded in the audit log as who asked (free text: the API token does not name a person)
    by: str = Field(default=DEFAULT_ACTOR, min_length=1, max_length=200)


class ApprovalIn(Reason):
    decision: Literal["approve", "reject"]
    #: the plan version decided on; the latest when absent
    plan_version: int | None = Field(default=None, ge=1)


class PlanVersionIn(_Model):
    """A new plan version: markdown (docs/plans.md) or its JSON form."""

    plan: str | None = Field(default=None, max_length=500_000)
    plan_json: PlanIn | None = None


def _driver(request: Request) -> tuple[Runtime, Driver]:
    runtime: Runtime = request.app.state.runtime
    not_ready = runtime.not_ready_reason()
    if not_ready is not None:
        raise HTTPException(503, not_ready)
    return runtime, runtime.driver


async def _idea(runtime: Runtime, idea_id: uuid.UUID) -> IdeaOut:
    return idea_out(await runtime.store.idea_detail(idea_id))


@router.post("/ideas/{idea_id}/pause", response_model=IdeaOut)
async def pause_idea(idea_id: uuid.UUID, request: Request, body: Reason | None = None) -> IdeaOut:
    """Stop dispatching the idea's tasks; runs in flight finish. Pausing a paused idea changes nothing."""
    runtime, driver = _driver(request)
    body = body or Reason()
    await driver.pause(idea_id, by=body.by, reason=body.reason)
    return await _idea(runtime, idea_id)


@router.post("/ideas/{idea_id}/resume", response_model=IdeaOut)
async def resume_idea(idea_id: uuid.UUID, request: Request, body: Reason | None = None) -> IdeaOut:
    """Dispatch the idea's ready tasks again."""
    runtime, driver = _driver(request)
    body = body or Reason()
    await driver.resume(idea_id, by=body.by, reason=body.reason)
    return await _idea(runtime, idea_id)


@router.post("/ideas/{idea_id}/cancel", response_model=IdeaOut)
async def cancel_idea(idea_id: uuid.UUID, request: Request, body: Reason | None = None) -> IdeaOut:
    """End the idea ``cancelled``: its open tasks are cancelled and its runs in flight stopped through the
    executor. Cancelling a cancelled idea changes nothing; a completed or failed one answers 409."""
    runtime, driver = _driver(request)
    body = body or Reason()
    await driver.cancel(idea_id, by=body.by, reason=body.reason)
    return await _idea(runtime, idea_id)


@router.post("/ideas/{idea_id}/approvals", response_model=IdeaOut)
async def decide_plan(idea_id: uuid.UUID, body: ApprovalIn, request: Request) -> IdeaOut:
    """Approve the plan of an idea awaiting approval (its tasks are built from that version) or reject it
    (the idea ends ``cancelled``)."""
    runtime, driver = _driver(request)
    await driver.approve(
        idea_id, approve=body.decision == "approve", version=body.plan_version, by=body.by, reason=body.reason
    )
    return await _idea(runtime, idea_id)


@router.post("/ideas/{idea_id}/plans", response_model=IdeaOut, status_code=201)
async def add_plan_version(idea_id: uuid.UUID, body: PlanVersionIn, request: Request) -> IdeaOut:
    """A new version of the idea's plan. An idea not planned yet, or planning, goes through the approval
    gate with it; one awaiting approval now waits for a decision on this version; later ones keep it on
    record without applying it."""
    runtime, driver = _driver(request)
    if (body.plan is None) == (body.plan_json is None):
        raise HTTPException(400, "give the plan as markdown (plan) or as JSON (plan_json), one of them")
    await runtime.store.get_idea(idea_id)  # an unknown idea is 404 before its plan is read
    await driver.submit_plan(
        idea_id,
        markdown=body.plan,
        document=None if body.plan_json is None else body.plan_json.model_dump(exclude_none=True),
        source="api",
    )
    return await _idea(runtime, idea_id)


@router.post("/tasks/{task_id}/retry", response_model=IdeaOut)
async def retry_task(task_id: uuid.UUID, request: Request, body: Reason | None = None) -> IdeaOut:
    """Give a failed or blocked task a fresh set of attempts, at once; answers the task's idea."""
    runtime, driver = _driver(request)
    body = body or Reason()
    task = await runtime.store.get_task(task_id)
    await driver.retry_task(task_id, by=body.by, reason=body.reason, idea_id=task.idea_id)
    return await _idea(runtime, task.idea_id)


@router.post("/tasks/{task_id}/cancel", response_model=IdeaOut)
async def cancel_task(task_id: uuid.UUID, request: Request, body: Reason | None = None) -> IdeaOut:
    """Cancel a task: its run in flight is stopped and the tasks depending on it block; answers its idea."""
    runtime, driver = _driver(request)
    body = body or Reason()
    task = await runtime.store.get_task(task_id)
    await driver.cancel_task(task_id, by=body.by, reason=body.reason, idea_id=task.idea_id)
    return await _idea(runtime, task.idea_id)
