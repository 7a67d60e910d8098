"""The reconciler: the slow sweep that repairs what the fast paths may miss.

One replica at a time (the ``reconciler`` lease) and every ``scheduler.reconcile_seconds`` it:

- asks the executor about runs in flight and records what it says: a workflow that failed or vanished
  without a callback makes its run ``failed`` or ``lost``, and its task is retried;
- marks stuck the running runs that report but fell silent for ``scheduler.heartbeat_timeout_seconds``
  (event ``run.stuck``,
  metric ``facteur_runs_stuck_total``) and retries them (the run times out) or cancels them, per
  ``scheduler.stuck_action``;
- re-applies the end of runs whose reaction was lost (the process stopped between the two transactions);
- starts planning for ideas registered without a plan whose planning run was never created;
- takes over claims that expired before their run was submitted (a replica died) and submits those runs;
- stops again the workflows of runs stopped in the last ten minutes (or ten sweeps) that are still going.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from facteur.clock import Clock
from facteur.domain.events import NewEvent
from facteur.domain.runs import Run, RunStatus
from facteur.errors import FacteurError
from facteur.executors.port import WorkflowPhase
from facteur.orchestrator.decisions import Refused
from facteur.orchestrator.dispatch import Dispatcher, execution_message
from facteur.orchestrator.driver import Driver
from facteur.settings import SchedulerSettings
from facteur.store.port import RunUpdate, Store

logger = logging.getLogger(__name__)

LEASE = "reconciler"
ACTOR = "reconciler"
#: runs looked at per sweep and kind
BATCH = 500
#: how long after a run was stopped its workflow is checked for still going (at least ten sweeps)
RESTOP_WINDOW_SECONDS = 600.0


@dataclass
class SweepResult:
    refreshed: int = 0
    stuck: int = 0
    resettled: int = 0
    planned: int = 0
    taken_over: int = 0
    #: workflows of stopped runs found still going, and stopped again
    restopped: int = 0


class Reconciler:
    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        driver: Driver,
        clock: Clock,
        settings: SchedulerSettings,
        holder: str,
        execution_topic: str,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._driver = driver
        self._clock = clock
        self._settings = settings
        self._holder = holder
        self._topic = execution_topic
        #: runs this process found stuck (the ``facteur_runs_stuck_total`` counter)
        self.stuck_total = 0
        #: stopped runs whose workflow was seen ended (within the re-stop window)
        self._seen_stopped: set[uuid.UUID] = set()
        self.sweeps = 0

    async def sweep(self) -> SweepResult | None:
        """One sweep; None when another replica holds the lease."""
        now = self._clock.now()
        lease_until = now + timedelta(seconds=2 * self._settings.reconcile_seconds)
        if not await self._store.acquire_lease(LEASE, self._holder, now=now, until=lease_until):
            return None
        self.sweeps += 1
        result = SweepResult()
        # runs stopped before this sweep (the ones it stops are looked at by the next)
        result.restopped = await self._stop_again(now)
        executor = self._dispatcher.executor
        live = await self._store.list_runs(
            statuses=(RunStatus.SUBMITTED, RunStatus.RUNNING), dispatched_only=True, limit=BATCH
        )
        for run in live:
            if run.executor != executor.kind or executor.kind == "none":
                continue
            if run.status is RunStatus.RUNNING and self._silent(run, now):
                await self._stuck(run, now)
                result.stuck += 1
                continue
            try:
                await self._dispatcher.refresh(run)
                result.refreshed += 1
            except FacteurError as exc:
                logger.warning("run status not refreshed: run=%s error=%s", run.id, exc)
        for run in await self._store.unsettled_runs(BATCH):
            await self._driver.run_changed(run)
            result.resettled += 1
        for idea_id in await self._store.ideas_to_plan(BATCH):
            await self._driver.start_planning(idea_id)
            result.planned += 1
        claim_until = now + timedelta(seconds=self._settings.claim_seconds)
        for run in await self._store.stale_claims(self._holder, now=now, until=claim_until, limit=BATCH):
            if await self._dispatcher.dispatch(run.id) is not None:
                result.taken_over += 1
        if result.stuck or result.resettled or result.planned or result.taken_over or result.restopped:
            logger.info(
                "reconciled: stuck=%s resettled=%s planned=%s taken_over=%s restopped=%s",
                result.stuck,
                result.resettled,
                result.planned,
                result.taken_over,
                result.restopped,
            )
        return result

    async def _stop_again(self, now: datetime) -> int:
        """Runs stopped lately (cancelled, timed out) whose workflow is still going — the executor could not
        be reached when they were stopped, or the process died before it asked — are stopped again."""
        executor = self._dispatcher.executor
        if executor.kind == "none":
            return 0
        since = now - timedelta(seconds=max(RESTOP_WINDOW_SECONDS, 10 * self._settings.reconcile_seconds))
        stopped = await self._store.list_runs(
            statuses=(RunStatus.CANCELLED, RunStatus.TIMED_OUT),
            dispatched_only=True,
            finished_after=since,
            limit=BATCH,
        )
        again = 0
        self._seen_stopped &= {run.id for run in stopped}  # forget the ones out of the window
        for run in stopped:
            ref = self._dispatcher.workflow_ref(run)
            if ref is None or run.id in self._seen_stopped:
                continue
            try:
                phase = (await executor.status(ref)).phase
            except FacteurError as exc:
                logger.warning("stopped run's workflow not checked: run=%s error=%s", run.id, exc)
                continue
            if phase in {WorkflowPhase.PENDING, WorkflowPhase.RUNNING}:
                logger.warning(
                    "stopped run's workflow still %s, stopping it again: run=%s", phase.value, run.id
                )
                await self._dispatcher.stop(run)
                again += 1
            else:
                self._seen_stopped.add(run.id)  # its workflow has ended: not asked again
        return again

    def _silent(self, run: Run, now: datetime) -> bool:
        """A run that reports (it sent a callback) and has been silent too long. Runs that never report
        (Froussard's stage runners) are judged by their executor's word only."""
        last = run.heartbeat_at
        return last is not None and (now - last).total_seconds() > self._settings.heartbeat_timeout_seconds

    async def _stuck(self, run: Run, now: datetime) -> None:
        last = run.heartbeat_at or run.started_at or run.submitted_at
        self.stuck_total += 1
        action = self._settings.stuck_action
        silence = (now - last).total_seconds() if last else None
        logger.warning("run stuck: run=%s silent_seconds=%s action=%s", run.id, silence, action)
        stuck = NewEvent(
            kind="run.stuck",
            actor=ACTOR,
            payload={"silent_seconds": silence, "action": action, "workflow": run.workflow_name},
            idea_id=run.idea_id,
            task_id=run.task_id,
            run_id=run.id,
        )
        detail = f"no heartbeat for {silence:.0f} s" if silence is not None else "no heartbeat"
        # the run ends either way (once: it is no longer running afterwards); then its task is retried, or
        # cancelled — only while this run is still its task's latest
        status = RunStatus.CANCELLED if action == "cancel" else RunStatus.TIMED_OUT
        updated = await self._store.update_run(
            run.id,
            RunUpdate(status=status, expected=(RunStatus.RUNNING,), finished_at=now, detail=detail),
            stuck,
            [
                execution_message(
                    self._topic, run, kind=f"run.{status.value}", status=status, at=now, detail=detail
                )
            ],
        )
        if updated is None:
            return
        await self._dispatcher.stop(updated)
        if action != "cancel":
            await self._driver.run_changed(updated)
            return
        try:
            await self._driver.cancel_task(
                run.task_id,
                by=ACTOR,
                reason=f"its run stopped sending heartbeats ({detail})",
                for_run=run.id,
                idea_id=run.idea_id,
            )
        except Refused as exc:
            # planning and review tasks are not cancelled on their own: their run's end is settled instead
            # (planned or reviewed again while attempts remain, then the idea fails)
            logger.warning(
                "stuck run's task not cancelled, its run is settled: run=%s reason=%s", run.id, exc
            )
            await self._driver.run_changed(updated)
        except FacteurError as exc:
            logger.warning("stuck run's task not cancelled: run=%s error=%s", run.id, exc)
