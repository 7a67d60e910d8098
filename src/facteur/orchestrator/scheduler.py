"""The scheduler: dispatches ready tasks of unpaused ideas — highest priority first, then the oldest — within
the global, per-repository and heavy-task limits.

It wakes whenever something may have made a task ready or freed a slot (the driver calls :meth:`wake`; a
back-off's end is a timed wake, :meth:`wake_at`), and otherwise every ``scheduler.poll_seconds`` as a
safety net. A pass is one store transaction (:meth:`Store.claim_tasks`) that claims tasks for this replica
(``claimed_by``, until ``now + scheduler.claim_seconds``) and records their runs; the runs are then
submitted to the executor. A run whose submission failed keeps its claim until it expires; the
reconciler then takes it over (:meth:`Store.stale_claims`) and submits it again under the same
deterministic workflow name, so no run is ever started twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from facteur.clock import Clock
from facteur.domain.events import NewEvent
from facteur.domain.ideas import IdeaState
from facteur.domain.runs import RunStatus
from facteur.domain.tasks import TaskState
from facteur.errors import FacteurError
from facteur.orchestrator.decisions import idea_moved, task_moved
from facteur.orchestrator.dispatch import Dispatcher
from facteur.orchestrator.run_bodies import RunBodies
from facteur.settings import SchedulerSettings
from facteur.store.port import ClaimCandidate, Claimed, ClaimedRun, ClaimLimits, ClaimRequest, Store

logger = logging.getLogger(__name__)

ACTOR = "scheduler"
#: seconds to wait after a pass failed (store unavailable) before the next
FAILURE_PAUSE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class PassResult:
    claimed: int
    submitted: int
    #: a limit held back ready tasks
    saturated: bool
    seconds: float


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        clock: Clock,
        settings: SchedulerSettings,
        bodies: RunBodies,
        holder: str,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._settings = settings
        self._bodies = bodies
        self.holder = holder
        self.limits = ClaimLimits(
            max_concurrent=settings.max_concurrent,
            max_per_repository=settings.max_per_repository,
            max_heavy=settings.max_heavy,
        )
        self._wake = asyncio.Event()
        #: back-off ends still to come (a heap)
        self._due: list[datetime] = []
        self.passes = 0
        self.dispatched = 0

    def wake(self) -> None:
        """Run a pass soon: something may have made a task ready or freed a slot."""
        self._wake.set()

    def wake_at(self, at: datetime) -> None:
        """Run a pass at ``at`` (a back-off's end); every such time is kept until it has passed."""
        heapq.heappush(self._due, at)
        if self._due[0] == at:
            self._wake.set()  # recompute the wait

    async def run(self) -> None:
        """Pass, then wait for a wake, a due back-off or the safety-net poll; until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.pass_once()
            except FacteurError as exc:
                logger.warning("scheduling pass failed: error=%s", exc)
                await asyncio.sleep(FAILURE_PAUSE_SECONDS)
            timeout = self._settings.poll_seconds
            now = self._clock.now()
            if self._due and self._due[0] <= now:
                while self._due and self._due[0] <= now:  # this pass served them
                    heapq.heappop(self._due)
                continue
            if self._due:
                timeout = min(timeout, (self._due[0] - now).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def pass_once(self) -> PassResult:
        """Claim what the limits allow and submit the runs."""
        started = time.perf_counter()
        now = self._clock.now()
        result = await self._store.claim_tasks(
            ClaimRequest(
                holder=self.holder,
                now=now,
                until=now + timedelta(seconds=self._settings.claim_seconds),
                limits=self.limits,
                build=lambda candidate: self._claim(candidate, now),
            )
        )
        self.passes += 1
        submitted = 0
        if result.claimed:
            outcomes = await asyncio.gather(*(self._submit(claimed) for claimed in result.claimed))
            submitted = sum(outcomes)
            self.dispatched += submitted
            logger.info(
                "tasks dispatched: claimed=%s submitted=%s saturated=%s",
                len(result.claimed),
                submitted,
                result.saturated,
            )
        return PassResult(len(result.claimed), submitted, result.saturated, time.perf_counter() - started)

    def _claim(self, candidate: ClaimCandidate, now: datetime) -> Claimed:
        """The run of a claimed task, and the events that record the claim (inside the pass)."""
        task, idea = candidate.task, candidate.idea
        run = self._bodies.implementation(candidate, now)
        events = [
            task_moved(task, ACTOR, TaskState.QUEUED, "claimed", attempt=run.attempt, by=self.holder),
            NewEvent(
                kind="run.created",
                actor=ACTOR,
                payload={
                    "stage": run.stage.value,
                    "attempt": run.attempt,
                    "workflow": run.workflow_name,
                    "executor": run.executor,
                    "priority": idea.priority,
                },
                idea_id=idea.id,
                task_id=task.id,
                run_id=run.id,
            ),
        ]
        idea_state = None
        if idea.state is IdeaState.AWAITING_DEPENDENCIES:
            idea_state = IdeaState.RUNNING_TASKS
            events.insert(0, idea_moved(idea.id, ACTOR, idea.state, idea_state, "dependencies_met"))
        return Claimed(run=run, idea_state=idea_state, events=events)

    async def _submit(self, claimed: ClaimedRun) -> int:
        run = await self._dispatcher.submit(claimed.run, claimed.event_body, claimed.raw_event)
        if run is None:
            return 0  # stays queued under this replica's claim: the reconciler retries once it expires
        if run.status is RunStatus.CANCELLED:  # cancelled while it was being submitted
            await self._dispatcher.stop(run)
        return 1
