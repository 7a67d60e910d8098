"""What stage runs report (``POST /api/v1/runs/{id}/events``), applied to the store: status, heartbeats,
progress, usage, plans and the outcome, each once per event id, with an audit event and, when the run's
status changes, a message on ``codex.execution``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from facteur.clock import Clock
from facteur.domain.events import NewEvent
from facteur.domain.plans import InvalidPlan, parse_plan, plan_to_json
from facteur.domain.run_reports import Outcome, ReportType, RunReportEvent
from facteur.domain.runs import Run, RunStatus
from facteur.orchestrator.dispatch import execution_message
from facteur.store.port import IngestEffects, PlanVersionDraft, ReportOutcome, RunReport, Store

logger = logging.getLogger(__name__)

ACTOR = "run"


@dataclass(frozen=True, slots=True)
class ReportAnswer:
    status: int
    body: dict[str, Any]


class RunReports:
    def __init__(self, *, store: Store, clock: Clock, execution_topic: str) -> None:
        self._store = store
        self._clock = clock
        self._topic = execution_topic
        #: told after a report changed a run's status (the lifecycle driver's ``run_changed``)
        self.on_change: Callable[[Run], Awaitable[None]] | None = None
        #: told after a report brought a valid plan, stored as a version (the driver's ``plan_received``)
        self.on_plan: Callable[[uuid.UUID, int], Awaitable[None]] | None = None

    async def receive(self, run_id: uuid.UUID, event: RunReportEvent) -> ReportAnswer:
        """Apply one event; raise :class:`facteur.errors.NotFound` for an unknown run."""
        now = self._clock.now()
        plan: PlanVersionDraft | None = None
        problems: tuple[str, ...] = ()
        refusal = "invalid plan"
        if event.type is ReportType.PLAN:
            assert event.markdown is not None
            run = await self._store.get_run(run_id)  # NotFound for an unknown run
            if run.status in _STOPPED:
                # a run stopped (by a person, a plan in hand, the reconciler) has no say over the plan
                refusal = "plan not taken"
                problems = (f"run {run_id} was {run.status.value} before its plan arrived",)
        if event.type is ReportType.PLAN and not problems:
            assert event.markdown is not None
            try:
                parsed = parse_plan(event.markdown)
                plan = PlanVersionDraft(source="run", markdown=event.markdown, document=plan_to_json(parsed))
            except InvalidPlan as exc:
                problems = exc.problems

        def effects(outcome: ReportOutcome) -> IngestEffects:
            run = outcome.run
            payload = _payload(event, outcome, problems)
            kind = "plan.rejected" if problems else f"run.{event.type.value}"
            events = [
                NewEvent(
                    kind=kind,
                    actor=ACTOR,
                    payload=payload,
                    idea_id=run.idea_id,
                    task_id=run.task_id,
                    run_id=run.id,
                )
            ]
            messages = []
            if outcome.status_changed:
                messages.append(
                    execution_message(
                        self._topic, run, kind=f"run.{run.status.value}", status=run.status, at=now
                    )
                )
            response: dict[str, Any] = {
                "runId": str(run.id),
                "eventId": event.id,
                "type": event.type.value,
                "runStatus": run.status.value,
                "statusChanged": outcome.status_changed,
            }
            if outcome.plan_version is not None:
                response["planVersion"] = outcome.plan_version
            if problems:
                response["error"] = refusal
                response["problems"] = list(problems)
            return IngestEffects(response=response, events=events, messages=messages)

        result = await self._store.report_run(
            RunReport(
                run_id=run_id,
                key=event.id,
                received_at=now,
                effects=effects,
                plan=plan,
                **_changes(event),
            )
        )
        outcome = result.outcome
        if outcome is not None:
            if outcome.plan_version is not None and self.on_plan is not None:
                await self.on_plan(outcome.run.idea_id, outcome.plan_version)
            if outcome.status_changed and self.on_change is not None:
                await self.on_change(outcome.run)
        body = {**result.response, "duplicate": result.duplicate}
        status = 422 if "problems" in result.response else 202
        logger.info(
            "run event: run=%s type=%s id=%s duplicate=%s status=%s",
            run_id,
            event.type.value,
            event.id,
            result.duplicate,
            body.get("runStatus"),
        )
        return ReportAnswer(status, body)


_STOPPED = frozenset({RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.LOST})


def _changes(event: RunReportEvent) -> dict[str, Any]:
    kind = event.type
    if kind is ReportType.STARTED:
        return {
            "status": RunStatus.RUNNING,
            "started": True,
            "heartbeat": True,
        }
    if kind in {ReportType.HEARTBEAT, ReportType.PROGRESS}:
        return {"status": RunStatus.RUNNING, "heartbeat": True}
    if kind is ReportType.USAGE:
        return {
            "tokens_in": event.input_tokens,
            "tokens_out": event.output_tokens,
            "cost_usd": event.cost_usd,
        }
    if kind is ReportType.COMPLETED:
        status = RunStatus.SUCCEEDED if event.outcome is Outcome.SUCCEEDED else RunStatus.FAILED
        return {
            "status": status,
            "heartbeat": True,
            "summary": event.summary,
            "artifacts": list(event.artifacts),
            "pull_request": event.pull_request,
            "branch": event.branch,
        }
    return {"heartbeat": True}  # plan


def _payload(event: RunReportEvent, outcome: ReportOutcome, problems: tuple[str, ...]) -> dict[str, Any]:
    payload: dict[str, Any] = {"event_id": event.id, "type": event.type.value}
    if outcome.status_changed:
        payload["status"] = {"from": outcome.previous_status.value, "to": outcome.run.status.value}
    if event.type is ReportType.PROGRESS:
        payload["text"] = event.text
        payload["checklist"] = [{"text": i.text, "done": i.done} for i in event.checklist]
    elif event.type is ReportType.USAGE:
        payload.update(
            input_tokens=event.input_tokens, output_tokens=event.output_tokens, cost_usd=event.cost_usd
        )
    elif event.type is ReportType.COMPLETED:
        payload.update(
            outcome=None if event.outcome is None else event.outcome.value,
            summary=event.summary,
            pull_request=event.pull_request,
            branch=event.branch,
        )
    elif event.type is ReportType.PLAN:
        payload["plan_version"] = outcome.plan_version
        if problems:
            payload["problems"] = list(problems)
    return payload
