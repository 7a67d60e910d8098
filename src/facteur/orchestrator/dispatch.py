"""Dispatch: submit recorded runs to the executor, and record what the executor says about them.

A run is recorded ``queued`` with its executor and deterministic workflow name in the same transaction as
the delivery that caused it; submission happens after that commit. When the executor cannot be reached the
run stays ``queued`` and :meth:`Dispatcher.resubmit_pending` (at start-up and then periodically) tries
again — runs no scheduler claimed; a claimed one whose claim expired is taken over by the reconciler
(``stale_claims``). The workflow name is deterministic, so a submission that did reach the executor is
never doubled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from facteur.bus.port import Message
from facteur.clock import Clock
from facteur.domain.events import NewEvent
from facteur.domain.lifecycle import RUN_TRANSITIONS
from facteur.domain.run_reports import run_token
from facteur.domain.runs import Run, RunStatus
from facteur.errors import ExecutorError, FacteurError, StoreError, WorkflowRefused
from facteur.executors.port import Executor, WorkflowPhase, WorkflowRef, WorkflowRequest, WorkflowStatus
from facteur.store.port import RunUpdate, Store

logger = logging.getLogger(__name__)

ACTOR = "facteur"


@dataclass(frozen=True, slots=True)
class Callbacks:
    """Where runs report (``<base_url>/api/v1/runs/<id>/events``) and the key of their tokens."""

    base_url: str
    secret: bytes = field(repr=False)

    def url(self, run_id: uuid.UUID) -> str:
        return f"{self.base_url.rstrip('/')}/api/v1/runs/{run_id}/events"


def run_event(run: Run, callbacks: Callbacks | None = None) -> dict[str, Any]:
    """The ``facteur`` block of the event handed to a run's workflow: the run's identity and, when the
    server takes callbacks, where to report and the run's own token."""
    block: dict[str, Any] = {
        "runId": str(run.id),
        "ideaId": str(run.idea_id),
        "taskId": str(run.task_id),
        "stage": run.stage.value,
        "workflowName": run.workflow_name,
        "attempt": run.attempt,
    }
    if callbacks is not None:
        block["callbackUrl"] = callbacks.url(run.id)
        block["callbackToken"] = run_token(callbacks.secret, run.id)
    return block


def execution_message(
    topic: str, run: Run, *, kind: str, status: RunStatus, at: datetime, detail: str | None = None
) -> Message:
    """What ``codex.execution`` carries about a run's change of status: JSON, keyed by run so that one
    run's messages stay in order."""
    document: dict[str, Any] = {
        "event": kind,
        "runId": str(run.id),
        "ideaId": str(run.idea_id),
        "taskId": str(run.task_id),
        "stage": run.stage.value,
        "status": status.value,
        "executor": run.executor,
        "workflowName": run.workflow_name,
        "namespace": run.namespace,
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    if detail:
        document["detail"] = detail
    return Message(
        topic=topic,
        key=f"run-{run.id}".encode(),
        value=json.dumps(document, separators=(",", ":")).encode(),
        headers=(
            ("content-type", b"application/json"),
            ("x-facteur-event", kind.encode()),
            ("x-codex-task-stage", run.stage.value.encode()),
        ),
    )


class Dispatcher:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        clock: Clock,
        *,
        execution_topic: str = "codex.execution",
        callbacks: Callbacks | None = None,
    ) -> None:
        self._store = store
        self._executor = executor
        self._clock = clock
        self._execution_topic = execution_topic
        self._callbacks = callbacks
        #: told after a run's status changed on the executor's word (the lifecycle driver)
        self.on_change: Callable[[Run], Awaitable[None]] | None = None

    @property
    def executor(self) -> Executor:
        return self._executor

    async def dispatch(self, run_id: uuid.UUID) -> Run | None:
        """Submit a queued run; None when it could not be submitted now (it stays queued)."""
        run = await self._store.get_run(run_id)
        if run.status is not RunStatus.QUEUED or run.workflow_name is None:
            return run
        event_body, raw_event = await self._store.run_payload(run_id)
        return await self.submit(run, event_body, raw_event)

    async def submit(self, run: Run, event_body: bytes, raw_event: bytes) -> Run | None:
        """Submit a run known to be queued, with its recorded payloads (no store read)."""
        assert run.workflow_name is not None
        message = json.loads(event_body)
        block = message.get("facteur")
        message["facteur"] = {**(block if isinstance(block, dict) else {}), **run_event(run, self._callbacks)}
        request = WorkflowRequest(
            run_id=run.id,
            idea_id=run.idea_id,
            task_id=run.task_id,
            stage=run.stage,
            name=run.workflow_name,
            created_at=run.created_at,
            event_body=json.dumps(message, separators=(",", ":")).encode(),
            raw_event=raw_event,
            repository=str(message.get("repository", "")),
            issue_number=int(message.get("issueNumber", 0) or 0),
            head=str(message.get("head", "")),
            base=str(message.get("base", "")),
        )
        stage = run.stage.value.upper()
        try:
            submission = await self._executor.submit(request)
        except WorkflowRefused as exc:
            # never to be accepted as it is: the run fails now, with the reason, instead of being retried
            logger.warning("workflow refused: stage=%s workflow=%s error=%s", stage, run.workflow_name, exc)
            await self._record_status(
                run,
                WorkflowStatus(phase=WorkflowPhase.FAILED, message=f"refused by the executor: {exc.message}"),
            )
            return await self._store.get_run(run.id)
        except ExecutorError as exc:
            logger.warning(
                "workflow submission failed: stage=%s repo=%s issue=%s workflow=%s error=%s (will retry)",
                stage,
                request.repository,
                request.issue_number,
                run.workflow_name,
                exc,
            )
            await self._store.append_event(
                NewEvent(
                    kind="run.submit_failed",
                    actor=ACTOR,
                    payload={"executor": self._executor.kind, "error": str(exc)},
                    idea_id=run.idea_id,
                    task_id=run.task_id,
                    run_id=run.id,
                )
            )
            return None
        ref = submission.ref
        logger.info(
            "workflow submitted: stage=%s repo=%s issue=%s workflow=%s namespace=%s",
            stage,
            request.repository,
            request.issue_number,
            ref.name,
            ref.namespace,
        )
        submitted = NewEvent(
            kind="run.submitted",
            actor=ACTOR,
            payload={
                "executor": ref.executor,
                "namespace": ref.namespace,
                "workflow": ref.name,
                "created": submission.created,
            },
            idea_id=run.idea_id,
            task_id=run.task_id,
            run_id=run.id,
        )
        now = self._clock.now()
        updated = await self._store.update_run(
            run.id,
            RunUpdate(
                status=RunStatus.SUBMITTED,
                expected=(RunStatus.QUEUED,),
                namespace=ref.namespace,
                submitted_at=now,
            ),
            submitted,
            [
                execution_message(
                    self._execution_topic,
                    dataclasses.replace(run, namespace=ref.namespace),
                    kind="run.submitted",
                    status=RunStatus.SUBMITTED,
                    at=now,
                )
            ],
        )
        if updated is None:
            # the executor already reported the run started (or finished): keep its status, record the fact
            await self._store.append_event(submitted)
            return await self._store.get_run(run.id)
        return updated

    async def resubmit_pending(self, limit: int = 500) -> int:
        """Submit every queued run that has an executor; returns how many were submitted."""
        pending = await self._store.list_runs(
            statuses=(RunStatus.QUEUED,), dispatched_only=True, unclaimed_only=True, limit=limit
        )
        submitted = 0
        for run in pending:
            if run.executor != self._executor.kind:
                logger.warning(
                    "queued run skipped: run=%s executor=%s configured=%s",
                    run.id,
                    run.executor,
                    self._executor.kind,
                )
                continue
            result = await self.dispatch(run.id)
            if result is not None and result.status is not RunStatus.QUEUED:
                submitted += 1
        return submitted

    async def retry_loop(self, interval: float) -> None:
        """Resubmit pending runs every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.resubmit_pending()
            except FacteurError as exc:
                logger.warning("resubmission sweep failed: error=%s", exc)

    async def on_workflow_status(self, run_id: str, status: WorkflowStatus) -> None:
        """Record what an executor reports about a run's workflow."""
        try:
            await self._record_status(uuid.UUID(run_id), status)
        except StoreError as exc:
            logger.warning("run status not recorded: run=%s phase=%s error=%s", run_id, status.phase, exc)

    async def _record_status(self, run: Run | uuid.UUID, status: WorkflowStatus) -> None:
        """Record a workflow's phase as its run's status, when that moves the run (the run table decides);
        a phase the run already has, or has moved past, writes nothing."""
        if status.phase is WorkflowPhase.PENDING:
            return
        target = status.phase.run_status()
        if isinstance(run, uuid.UUID):
            run = await self._store.get_run(run)
        if not RUN_TRANSITIONS.allows(run.status, target):
            return
        kind = "run.started" if target is RunStatus.RUNNING else f"run.{target.value}"
        run_id = run.id
        now = self._clock.now()
        payload: dict[str, Any] = {"phase": status.phase.value, **status.details}
        if status.message:
            payload["message"] = status.message
        updated = await self._store.update_run(
            run_id,
            RunUpdate(
                status=target,
                expected=(run.status,),
                finished_at=now if target.terminal else None,
                detail=status.message or None,
            ),
            NewEvent(
                kind=kind,
                actor=f"executor:{self._executor.kind}",
                payload=payload,
                idea_id=run.idea_id,
                task_id=run.task_id,
                run_id=run.id,
            ),
            [
                execution_message(
                    self._execution_topic,
                    run,
                    kind=kind,
                    status=target,
                    at=now,
                    detail=status.message or None,
                )
            ],
        )
        if updated is not None and self.on_change is not None:
            await self.on_change(updated)

    def workflow_ref(self, run: Run) -> WorkflowRef | None:
        """The run's workflow on this executor; None when it has none here (never submitted, or another
        executor's)."""
        if run.workflow_name is None or run.executor != self._executor.kind:
            return None
        return WorkflowRef(self._executor.kind, run.namespace or self._executor.namespace, run.workflow_name)

    async def stop(self, run: Run) -> None:
        """Ask the executor to stop the run's workflow; a failure is logged (the reconciler asks again)."""
        ref = self.workflow_ref(run)
        if ref is None:
            return
        try:
            await self._executor.cancel(ref)
            logger.info("workflow cancelled: run=%s workflow=%s", run.id, ref.name)
        except ExecutorError as exc:
            logger.warning("workflow not cancelled: run=%s workflow=%s error=%s", run.id, ref.name, exc)

    async def refresh(self, run: Run) -> WorkflowStatus | None:
        """Ask the executor for a run's workflow status and record it."""
        ref = self.workflow_ref(run)
        if ref is None:
            return None
        status = await self._executor.status(ref)
        await self._record_status(run, status)
        return status
