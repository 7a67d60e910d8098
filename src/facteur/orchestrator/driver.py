"""The lifecycle driver: applies the orchestrator's decisions (:mod:`facteur.orchestrator.decisions`) to
the store when something happens to an idea — a run started or ended, a plan arrived, a person approved,
paused, resumed, cancelled or retried — then does what the change asks of the outside world: stop
workflows through the executor, submit planning runs, wake the scheduler.

Every decision is one store transaction (:meth:`Store.change_idea`); a move the transition tables refuse
raises :class:`IllegalTransition`, writes nothing and is recorded as a ``transition.refused`` event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from facteur.clock import Clock, Ids
from facteur.domain.approvals import ApprovalNeed
from facteur.domain.ideas import Idea, IdeaState
from facteur.domain.lifecycle import IllegalTransition, refusal_event
from facteur.domain.plans import parse_plan, plan_from_json, plan_to_json, render_plan
from facteur.domain.runs import Run, RunStatus
from facteur.domain.tasks import Task, TaskState
from facteur.errors import FacteurError
from facteur.orchestrator import decisions
from facteur.orchestrator.decisions import Draft, RetryPolicy
from facteur.orchestrator.dispatch import Dispatcher
from facteur.orchestrator.run_bodies import RunBodies
from facteur.settings import Settings
from facteur.store.port import IdeaChange, IdeaDetail, PlanVersionDraft, Store

logger = logging.getLogger(__name__)

_IN_FLIGHT = frozenset({TaskState.QUEUED, TaskState.RUNNING})


class Driver:
    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        clock: Clock,
        ids: Ids,
        settings: Settings,
        bodies: RunBodies,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._ids = ids
        self._settings = settings
        self._bodies = bodies
        self._stage_runs = decisions.StageRuns(
            new_id=ids.new_id,
            review=lambda draft, task, attempt: bodies.review(
                draft.idea,
                draft.detail,
                task,
                attempt,
                draft.now,
                succeeded={t.id for t in draft.tasks.values() if t.state is TaskState.SUCCEEDED},
            ),
        )
        scheduler = settings.scheduler
        self.policy = RetryPolicy(
            max_attempts=scheduler.max_attempts,
            backoff_seconds=scheduler.retry_backoff_seconds,
            max_backoff_seconds=scheduler.max_backoff_seconds,
            on_exhausted=scheduler.on_exhausted,
        )
        #: told when tasks may have become ready or slots free (the scheduler's ``wake``)
        self.wake: Callable[[], None] = lambda: None
        #: told when a task's back-off ends (the scheduler's ``wake_at``)
        self.wake_at: Callable[[datetime], None] = lambda _at: None

    # --- reactions -----------------------------------------------------------------------------------------

    async def run_changed(self, run: Run) -> None:
        """A run's status changed (callback, executor, reconciler): move its task and idea."""
        try:
            await self._change(
                run.idea_id,
                lambda draft: decisions.settle_run(
                    draft,
                    run.id,
                    policy=self.policy,
                    pipeline=self._settings.pipeline_of(draft.idea.repository),
                    planning_run=self._planning_run(draft),
                    stored_plan=self._apply_stored_plan,
                ),
                actor="orchestrator",
                run_id=run.id,
            )
        except IllegalTransition as exc:
            logger.warning("run change not applied: run=%s error=%s", run.id, exc)
        except FacteurError as exc:
            logger.warning("run change not applied, the reconciler will retry: run=%s error=%s", run.id, exc)

    async def plan_received(self, idea_id: uuid.UUID, version: int) -> None:
        """A planning run sent a valid plan (stored as ``version``): through the approval gate."""
        try:
            await self._change(
                idea_id, lambda draft: self._apply_stored_plan(draft, version), actor="orchestrator"
            )
        except FacteurError as exc:
            logger.warning("plan not applied: idea=%s version=%s error=%s", idea_id, version, exc)

    async def submit_plan(
        self, idea_id: uuid.UUID, *, markdown: str | None, document: Any, source: str
    ) -> IdeaChange:
        """A new plan version from a person (API) or a plan comment (intake); raises :class:`InvalidPlan`."""
        plan = parse_plan(markdown) if markdown is not None else plan_from_json(document)
        stored = PlanVersionDraft(
            source=source, markdown=markdown or render_plan(plan), document=plan_to_json(plan)
        )
        return await self._change(
            idea_id,
            lambda draft: decisions.receive_plan(
                draft,
                version=len(draft.detail.plans) + 1,
                plan=plan,
                need=self._need(draft.detail),
                new_id=self._ids.new_id,
                stored=stored,
            ),
            actor="orchestrator",
        )

    async def idea_created(self, idea: Idea) -> None:
        """A new idea: plan it when it came without a plan, else let the scheduler look at its tasks."""
        if idea.state is IdeaState.REGISTERED:
            await self.start_planning(idea.id)
        else:
            self.wake()

    async def start_planning(self, idea_id: uuid.UUID) -> None:
        """Create and submit the planning run of a registered idea without a plan."""
        task_id = self._ids.new_id()
        try:
            await self._change(
                idea_id,
                lambda draft: decisions.start_planning(
                    draft, task_id=task_id, planning_run=self._planning_run(draft)
                ),
                actor="orchestrator",
            )
        except FacteurError as exc:
            logger.warning("planning not started, the reconciler will retry: idea=%s error=%s", idea_id, exc)

    # --- people's requests ---------------------------------------------------------------------------------

    async def approve(
        self, idea_id: uuid.UUID, *, approve: bool, version: int | None, by: str, reason: str | None
    ) -> IdeaChange:
        return await self._change(
            idea_id,
            lambda draft: decisions.decide_approval(
                draft, approve=approve, version=version, by=by, reason=reason, new_id=self._ids.new_id
            ),
            actor=by,
        )

    async def pause(self, idea_id: uuid.UUID, *, by: str, reason: str | None) -> IdeaChange:
        return await self._change(
            idea_id, lambda draft: decisions.pause(draft, by=by, reason=reason, paused=True), actor=by
        )

    async def resume(self, idea_id: uuid.UUID, *, by: str, reason: str | None) -> IdeaChange:
        return await self._change(
            idea_id, lambda draft: decisions.pause(draft, by=by, reason=reason, paused=False), actor=by
        )

    async def cancel(self, idea_id: uuid.UUID, *, by: str, reason: str | None) -> IdeaChange:
        return await self._change(
            idea_id, lambda draft: decisions.cancel(draft, by=by, reason=reason), actor=by
        )

    async def retry_task(
        self, task_id: uuid.UUID, *, by: str, reason: str | None = None, idea_id: uuid.UUID | None = None
    ) -> IdeaChange:
        """Retry a task (of ``idea_id`` when the caller knows it: the task is not read again)."""
        return await self._change(
            idea_id or (await self._store.get_task(task_id)).idea_id,
            lambda draft: decisions.retry_task(draft, task_id, by=by, reason=reason),
            actor=by,
            task_id=task_id,
        )

    async def cancel_task(
        self,
        task_id: uuid.UUID,
        *,
        by: str,
        reason: str | None,
        for_run: uuid.UUID | None = None,
        idea_id: uuid.UUID | None = None,
    ) -> IdeaChange:
        """Cancel a task (of ``idea_id`` when the caller knows it); with ``for_run``, only while that run is
        the task's latest (a stuck run's)."""
        return await self._change(
            idea_id or (await self._store.get_task(task_id)).idea_id,
            lambda draft: decisions.cancel_task(
                draft,
                task_id,
                by=by,
                reason=reason,
                pipeline=self._settings.pipeline_of(draft.idea.repository),
                for_run=for_run,
            ),
            actor=by,
            task_id=task_id,
        )

    # --- applying ------------------------------------------------------------------------------------------

    async def _change(
        self,
        idea_id: uuid.UUID,
        decide: Callable[[Draft], IdeaChange],
        *,
        actor: str,
        task_id: uuid.UUID | None = None,
        run_id: uuid.UUID | None = None,
    ) -> IdeaChange:
        def apply(detail: IdeaDetail) -> IdeaChange:
            return decide(Draft(detail, actor=actor, now=self._clock.now(), stage_runs=self._stage_runs))

        try:
            change = await self._store.change_idea(idea_id, apply)
        except IllegalTransition as exc:
            await self._store.append_event(
                refusal_event(exc, actor=actor, idea_id=idea_id, task_id=task_id, run_id=run_id)
            )
            raise
        await self._after(change)
        return change

    async def _after(self, change: IdeaChange) -> None:
        """What a committed change asks of the executor and the scheduler."""
        stopped = [run_id for run_id, update in change.run_updates if update.status is RunStatus.CANCELLED]
        if stopped:
            await asyncio.gather(*(self._stop(run_id) for run_id in stopped))
        for new in change.runs:
            await self._dispatcher.dispatch(new.id)
        due = min((t.not_before for t in change.tasks if t.not_before is not None), default=None)
        if due is not None:  # a task backing off: the scheduler looks again when it may run
            self.wake_at(due)
        # a pass has something to do when work became ready or a slot freed (a task left queued or running);
        # a task starting changes neither
        settled = any(t.state not in _IN_FLIGHT for t in change.tasks)
        ready = any(t.state is TaskState.READY for t in change.new_tasks)
        if settled or ready or change.paused is False or stopped:
            self.wake()

    async def _stop(self, run_id: uuid.UUID) -> None:
        run = await self._store.get_run(run_id)
        await self._dispatcher.stop(run)

    def _apply_stored_plan(self, draft: Draft, version: int) -> IdeaChange:
        stored = next((p for p in draft.detail.plans if p.version == version), None)
        if stored is None:
            return draft.change()
        return decisions.receive_plan(
            draft,
            version=version,
            plan=plan_from_json(stored.document),
            need=self._need(draft.detail),
            new_id=self._ids.new_id,
        )

    def _planning_run(self, draft: Draft) -> Callable[[Task, int], Any]:
        return lambda task, attempt: self._bodies.planning(
            draft.idea, draft.detail.spec, task, attempt, draft.now
        )

    def _need(self, detail: IdeaDetail) -> ApprovalNeed:
        risk_labels = tuple(detail.spec.get("risk_labels") or ())
        return self._settings.approvals.need(detail.idea.repository, risk_labels)
