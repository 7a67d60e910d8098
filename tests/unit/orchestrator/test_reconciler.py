"""The reconciler's sweep on the in-memory store: what it records of the executor's word about runs in flight,
stuck runs, runs whose reaction was lost, ideas whose planning never started, expired claims, and its lease.

The scheduler's passes and the sweeps are driven by hand against a fake clock (the runtime is not started).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facteur.domain.events import Event, verify_chain
from facteur.domain.ideas import IdeaSource, IdeaState
from facteur.domain.run_reports import parse_report
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState
from facteur.errors import ExecutorError
from facteur.executors.none import NoneExecutor
from facteur.executors.port import Submission, WorkflowPhase, WorkflowRef, WorkflowRequest, WorkflowStatus
from facteur.orchestrator.ideas import Submission as IdeaSubmission
from facteur.orchestrator.reconciler import Reconciler, SweepResult
from facteur.runtime import Runtime, build_runtime
from facteur.settings import load_settings
from facteur.store.memory import MemoryStore
from facteur.store.port import IdeaCreation, IdeaDraft, RunUpdate
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock, SequentialIds

HEARTBEAT_TIMEOUT = 60
BACKOFF = 10
CLAIM = 30
RECONCILE = 15


class ScriptedExecutor(NoneExecutor):
    """An executor whose workflows' phases the test sets; it records what it was asked to do."""

    namespace = "scripted"

    def __init__(self, kind: str = "local") -> None:
        super().__init__()
        self.kind = kind
        #: workflow name -> the phase ``status`` answers (else the none executor's answer)
        self.phases: dict[str, WorkflowPhase] = {}
        self.messages: dict[str, str] = {}
        #: names submitted (failed submissions included), in order
        self.submissions: list[str] = []
        #: names asked about, in order
        self.asked: list[str] = []
        self.cancels: list[WorkflowRef] = []
        #: set to make submissions fail as if the executor could not be reached
        self.failing = False
        #: workflow names whose status cannot be read
        self.unreadable: set[str] = set()

    def set_phase(self, run: Run, phase: WorkflowPhase, message: str = "") -> None:
        assert run.workflow_name is not None
        self.phases[run.workflow_name] = phase
        self.messages[run.workflow_name] = message

    async def submit(self, request: WorkflowRequest) -> Submission:
        self.submissions.append(request.name)
        if self.failing:
            raise ExecutorError("executor unreachable")
        return await super().submit(request)

    async def status(self, ref: WorkflowRef) -> WorkflowStatus:
        self.asked.append(ref.name)
        if ref.name in self.unreadable:
            raise ExecutorError(f"status of {ref.name} unavailable")
        phase = self.phases.get(ref.name)
        if phase is not None:
            return WorkflowStatus(phase=phase, message=self.messages.get(ref.name, ""))
        return await super().status(ref)

    async def cancel(self, ref: WorkflowRef) -> None:
        self.cancels.append(ref)
        await super().cancel(ref)


def plan(*tasks: tuple[str, list[str]]) -> dict[str, Any]:
    return {
        "tasks": [
            {"key": key, "title": f"Task {key}", "depends_on": deps, "acceptance_criteria": [f"{key} works"]}
            for key, deps in tasks
        ]
    }


class World:
    def __init__(
        self, runtime: Runtime, store: MemoryStore, clock: FakeClock, executor: ScriptedExecutor
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.clock = clock
        self.executor = executor

    async def submit(self, document: dict[str, Any], title: str = "An idea") -> uuid.UUID:
        result = await self.runtime.ideas.submit(
            IdeaSubmission(title=title, goal="done", plan_json=document, repository="acme/widgets")
        )
        return result.detail.idea.id

    async def dispatch(self) -> list[Run]:
        """One scheduler pass; the runs it recorded."""
        before = set(self.store.runs)
        await self.runtime.scheduler.pass_once()
        return [self.store.runs[run_id] for run_id in self.store.runs if run_id not in before]

    async def sweep(self) -> SweepResult:
        result = await self.runtime.reconciler.sweep()
        assert result is not None, "the runtime's reconciler should hold the lease"
        return result

    async def heartbeat(self, run: Run, event_id: str) -> None:
        answer = await self.runtime.run_reports.receive(
            run.id, parse_report({"id": event_id, "type": "heartbeat"})
        )
        assert answer.status == 202

    def run(self, run: Run) -> Run:
        """The run as the store holds it now."""
        return self.store.runs[run.id]

    def task(self, run: Run) -> Task:
        return self.store.tasks[run.task_id]

    async def states(self, idea_id: uuid.UUID) -> dict[str, str]:
        detail = await self.store.idea_detail(idea_id)
        return {view.task.key: view.task.state.value for view in detail.tasks}

    async def idea_state(self, idea_id: uuid.UUID) -> IdeaState:
        return (await self.store.get_idea(idea_id)).state

    async def events(self, run: Run, kind: str) -> list[Event]:
        return [e for e in await self.store.list_events(run_id=run.id) if e.kind == kind]

    async def unplanned_idea(self, source: IdeaSource, source_ref: str) -> uuid.UUID:
        """An idea registered without a plan and without its planning task (the process stopped between
        creating it and starting its planning)."""
        idea = await self.store.create_idea(
            IdeaCreation(
                idea=IdeaDraft(
                    id=self.runtime.ids.new_id(),
                    source=source,
                    source_ref=source_ref,
                    repository="acme/widgets",
                    title="Unplanned",
                    initiator="ana",
                ),
                at=self.clock.now(),
            )
        )
        assert idea.state is IdeaState.REGISTERED
        return idea.id


@asynccontextmanager
async def make_world(executor: ScriptedExecutor | None = None, **env: str) -> AsyncIterator[World]:
    clock = FakeClock()
    store = MemoryStore(clock)
    executor = executor or ScriptedExecutor()
    settings = load_settings(
        environ={
            "FACTEUR_EXECUTOR__KIND": "none",
            "FACTEUR_SCHEDULER__MAX_CONCURRENT": "10",
            "FACTEUR_SCHEDULER__MAX_PER_REPOSITORY": "10",
            "FACTEUR_SCHEDULER__MAX_ATTEMPTS": "3",
            "FACTEUR_SCHEDULER__RETRY_BACKOFF_SECONDS": str(BACKOFF),
            "FACTEUR_SCHEDULER__HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
            "FACTEUR_SCHEDULER__CLAIM_SECONDS": str(CLAIM),
            "FACTEUR_SCHEDULER__RECONCILE_SECONDS": str(RECONCILE),
            **env,
        },
    )
    runtime = await build_runtime(settings, clock=clock, ids=SequentialIds(), store=store, executor=executor)
    try:
        yield World(runtime, store, clock, executor)
    finally:
        await runtime.close()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with make_world() as made:
        yield made


async def one_running_task(world: World, *tasks: tuple[str, list[str]]) -> tuple[uuid.UUID, Run]:
    """An idea whose first task's run was submitted (and nothing else dispatched)."""
    idea_id = await world.submit(plan(*tasks))
    [run] = await world.dispatch()
    assert (run.status, run.executor, world.task(run).state) == (
        RunStatus.SUBMITTED,
        "local",
        TaskState.QUEUED,
    )
    return idea_id, run


# --- the executor's word ----------------------------------------------------------------------------------


async def test_a_vanished_workflow_makes_its_run_lost_and_its_task_is_retried_after_a_backoff(
    world: World,
) -> None:
    idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
    world.executor.set_phase(run, WorkflowPhase.NOT_FOUND)
    world.clock.advance(5)
    result = await world.sweep()
    assert (result.refreshed, result.stuck, result.resettled) == (1, 0, 0)
    assert world.executor.asked == [run.workflow_name]
    lost = world.run(run)
    assert (lost.status, lost.finished_at) == (RunStatus.LOST, world.clock.now())
    [event] = await world.events(run, "run.lost")
    assert event.actor == "executor:local" and event.payload["phase"] == "not_found"
    task = world.task(run)
    assert (task.state, task.attempts) == (TaskState.READY, 1)  # the attempt is spent
    assert task.not_before == world.clock.now() + timedelta(seconds=BACKOFF)
    assert await world.states(idea_id) == {"a": "ready", "b": "pending"}
    assert await world.idea_state(idea_id) is IdeaState.RUNNING_TASKS

    assert (await world.sweep()).refreshed == 0  # a lost run is no longer asked about
    assert await world.dispatch() == []  # the back-off holds
    world.clock.advance(BACKOFF)
    [second] = await world.dispatch()
    assert (second.task_id, second.attempt, second.status) == (run.task_id, 2, RunStatus.SUBMITTED)
    assert second.workflow_name != run.workflow_name
    assert verify_chain(await world.store.list_events()) is None


async def test_a_failed_workflow_fails_its_run_and_its_task_is_retried(world: World) -> None:
    idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
    world.executor.set_phase(run, WorkflowPhase.FAILED, "step implement exited with 1")
    result = await world.sweep()
    assert result.refreshed == 1
    failed = world.run(run)
    assert (failed.status, failed.detail) == (RunStatus.FAILED, "step implement exited with 1")
    [event] = await world.events(run, "run.failed")
    assert event.payload["message"] == "step implement exited with 1"
    task = world.task(run)
    assert (task.state, task.attempts) == (TaskState.READY, 1)
    assert task.not_before == world.clock.now() + timedelta(seconds=BACKOFF)
    retry = [
        e
        for e in await world.store.list_events(idea_id=idea_id)
        if e.kind == "task.transition" and e.payload["trigger"] == "retry"
    ]
    assert [(e.payload["attempt"], e.payload["backoff_seconds"]) for e in retry] == [(2, BACKOFF)]


async def test_a_failed_workflow_of_the_last_attempt_fails_the_idea() -> None:
    async with make_world(FACTEUR_SCHEDULER__MAX_ATTEMPTS="1") as world:
        idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
        world.executor.set_phase(run, WorkflowPhase.FAILED)
        await world.sweep()
        assert world.run(run).status is RunStatus.FAILED
        assert await world.states(idea_id) == {"a": "failed", "b": "cancelled"}
        assert await world.idea_state(idea_id) is IdeaState.FAILED


async def test_a_running_workflow_moves_its_task_to_running_and_its_end_settles_it(world: World) -> None:
    idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
    world.executor.set_phase(run, WorkflowPhase.RUNNING)
    result = await world.sweep()
    assert result.refreshed == 1
    assert world.run(run).status is RunStatus.RUNNING
    assert world.task(run).state is TaskState.RUNNING
    assert len(await world.events(run, "run.started")) == 1

    world.clock.advance(HEARTBEAT_TIMEOUT / 2)
    await world.sweep()  # the executor says the same again: nothing new is recorded
    assert len(await world.events(run, "run.started")) == 1
    assert world.task(run).state is TaskState.RUNNING

    world.executor.set_phase(run, WorkflowPhase.SUCCEEDED)
    await world.sweep()
    assert world.run(run).status is RunStatus.SUCCEEDED
    assert await world.states(idea_id) == {"a": "succeeded", "b": "ready"}


async def test_a_pending_workflow_changes_nothing(world: World) -> None:
    idea_id, run = await one_running_task(world, ("a", []))
    before = len(world.store.events)
    result = await world.sweep()
    assert result == SweepResult(refreshed=1)
    assert world.run(run) == run
    assert world.task(run).state is TaskState.QUEUED
    assert len(world.store.events) == before
    assert await world.idea_state(idea_id) is IdeaState.RUNNING_TASKS


async def test_runs_of_the_none_executor_are_not_asked_about() -> None:
    async with make_world(ScriptedExecutor(kind="none")) as world:
        _, run = await world_run_of_kind(world, "none")
        world.executor.set_phase(run, WorkflowPhase.NOT_FOUND)
        result = await world.sweep()
        assert result.refreshed == 0 and world.executor.asked == []
        assert world.run(run).status is RunStatus.SUBMITTED


async def test_runs_of_another_executor_are_not_asked_about(world: World) -> None:
    _, run = await one_running_task(world, ("a", []))
    world.executor.set_phase(run, WorkflowPhase.NOT_FOUND)
    world.executor.kind = "argo"  # the configuration changed since the run was submitted
    result = await world.sweep()
    assert result.refreshed == 0 and world.executor.asked == []
    assert world.run(run).status is RunStatus.SUBMITTED


async def test_a_run_whose_status_cannot_be_read_does_not_stop_the_sweep(world: World) -> None:
    first_idea = await world.submit(plan(("a", [])), title="first")
    second_idea = await world.submit(plan(("b", [])), title="second")
    first, second = sorted(await world.dispatch(), key=lambda r: (r.created_at, r.id))
    assert {first.idea_id, second.idea_id} == {first_idea, second_idea}
    assert first.workflow_name is not None
    world.executor.unreadable.add(first.workflow_name)
    world.executor.set_phase(second, WorkflowPhase.NOT_FOUND)
    unplanned = await world.unplanned_idea(IdeaSource.API, "unplanned-1")
    result = await world.sweep()
    assert (result.refreshed, result.planned) == (1, 1)
    assert world.run(first).status is RunStatus.SUBMITTED
    assert world.run(second).status is RunStatus.LOST
    assert await world.idea_state(unplanned) is IdeaState.PLANNING


async def world_run_of_kind(world: World, kind: str) -> tuple[uuid.UUID, Run]:
    idea_id = await world.submit(plan(("a", [])))
    [run] = await world.dispatch()
    assert (run.status, run.executor) == (RunStatus.SUBMITTED, kind)
    return idea_id, run


# --- stuck runs -------------------------------------------------------------------------------------------


async def test_a_silent_running_run_times_out_its_workflow_is_stopped_and_its_task_retried(
    world: World,
) -> None:
    idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
    await world.heartbeat(run, "hb-1")
    assert (world.run(run).status, world.task(run).state) == (RunStatus.RUNNING, TaskState.RUNNING)

    world.clock.advance(HEARTBEAT_TIMEOUT)  # silent for exactly the timeout: not yet stuck
    assert (await world.sweep()).stuck == 0
    assert world.run(run).status is RunStatus.RUNNING

    world.clock.advance(1)
    asked = len(world.executor.asked)
    result = await world.sweep()
    assert (result.stuck, result.refreshed) == (1, 0)
    assert world.runtime.reconciler.stuck_total == 1
    assert len(world.executor.asked) == asked  # a stuck run is not asked about, it is timed out
    [stuck] = await world.events(run, "run.stuck")
    assert stuck.actor == "reconciler"
    assert stuck.payload == {
        "silent_seconds": HEARTBEAT_TIMEOUT + 1,
        "action": "retry",
        "workflow": run.workflow_name,
    }
    timed_out = world.run(run)
    assert timed_out.status is RunStatus.TIMED_OUT
    assert timed_out.finished_at == world.clock.now()
    assert timed_out.detail == f"no heartbeat for {HEARTBEAT_TIMEOUT + 1} s"
    assert world.executor.cancels == [WorkflowRef("local", "scripted", str(run.workflow_name))]
    messages = [json.loads(entry.entry.message.value) for entry in world.store.outbox]
    assert [(m["event"], m["status"]) for m in messages if m.get("runId") == str(run.id)][-1] == (
        "run.timed_out",
        "timed_out",
    )
    task = world.task(run)
    assert (task.state, task.attempts) == (TaskState.READY, 1)
    assert task.not_before == world.clock.now() + timedelta(seconds=BACKOFF)
    assert await world.states(idea_id) == {"a": "ready", "b": "pending"}

    await world.sweep()  # found once
    assert world.runtime.reconciler.stuck_total == 1
    world.clock.advance(BACKOFF)
    [second] = await world.dispatch()
    assert (second.task_id, second.attempt) == (run.task_id, 2)
    assert verify_chain(await world.store.list_events()) is None


async def test_a_stuck_run_of_the_last_attempt_fails_the_idea() -> None:
    async with make_world(FACTEUR_SCHEDULER__MAX_ATTEMPTS="1") as world:
        idea_id, run = await one_running_task(world, ("a", []))
        await world.heartbeat(run, "hb-1")
        world.clock.advance(HEARTBEAT_TIMEOUT + 1)
        assert (await world.sweep()).stuck == 1
        assert world.run(run).status is RunStatus.TIMED_OUT
        assert await world.states(idea_id) == {"a": "failed"}
        assert await world.idea_state(idea_id) is IdeaState.FAILED


async def test_with_stuck_action_cancel_the_task_and_its_run_are_cancelled() -> None:
    async with make_world(FACTEUR_SCHEDULER__STUCK_ACTION="cancel") as world:
        idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
        await world.heartbeat(run, "hb-1")
        world.clock.advance(HEARTBEAT_TIMEOUT + 1)
        result = await world.sweep()
        assert result.stuck == 1 and world.runtime.reconciler.stuck_total == 1
        [stuck] = await world.events(run, "run.stuck")
        assert stuck.payload["action"] == "cancel"
        cancelled = world.run(run)
        assert cancelled.status is RunStatus.CANCELLED
        assert cancelled.detail == "no heartbeat for 61 s"
        assert await world.states(idea_id) == {"a": "cancelled", "b": "blocked"}
        assert world.task(run).attempts == 1
        assert world.executor.cancels == [WorkflowRef("local", "scripted", str(run.workflow_name))]
        [moved] = [
            e
            for e in await world.store.list_events(idea_id=idea_id)
            if e.kind == "task.transition" and e.task_id == run.task_id and e.payload["to"] == "cancelled"
        ]
        assert moved.payload["by"] == "reconciler"
        assert moved.payload["reason"] == "its run stopped sending heartbeats (no heartbeat for 61 s)"
        assert await world.dispatch() == []  # nothing is retried


async def test_a_run_with_a_recent_heartbeat_is_left_alone(world: World) -> None:
    _, run = await one_running_task(world, ("a", []))
    await world.heartbeat(run, "hb-1")
    world.clock.advance(HEARTBEAT_TIMEOUT - 10)
    await world.heartbeat(run, "hb-2")
    world.clock.advance(HEARTBEAT_TIMEOUT - 10)  # long since the run started, not since it last spoke
    result = await world.sweep()
    assert (result.stuck, result.refreshed) == (0, 1)
    assert world.runtime.reconciler.stuck_total == 0
    assert world.run(run).status is RunStatus.RUNNING
    assert await world.events(run, "run.stuck") == []
    assert world.executor.cancels == []

    world.clock.advance(11)
    assert (await world.sweep()).stuck == 1
    [stuck] = await world.events(run, "run.stuck")
    assert stuck.payload["silent_seconds"] == HEARTBEAT_TIMEOUT + 1


async def test_a_running_run_that_never_reports_is_judged_by_its_executor_only(world: World) -> None:
    """Froussard's stage runners send no callbacks: their workflow's phase counts, not their silence."""
    _, run = await one_running_task(world, ("a", []))
    world.executor.set_phase(run, WorkflowPhase.RUNNING)
    world.clock.advance(10 * HEARTBEAT_TIMEOUT)
    assert (await world.sweep()).stuck == 0
    assert world.run(run).status is RunStatus.RUNNING and world.run(run).heartbeat_at is None
    assert await world.events(run, "run.stuck") == []


async def test_a_submitted_run_that_has_not_started_is_never_stuck(world: World) -> None:
    _, run = await one_running_task(world, ("a", []))
    world.clock.advance(10 * HEARTBEAT_TIMEOUT)
    result = await world.sweep()
    assert (result.stuck, result.refreshed) == (0, 1)
    assert world.run(run).status is RunStatus.SUBMITTED


async def two_runs_of_one_task(world: World) -> tuple[Run, Run]:
    """Two planning requests on one GitHub issue (distinct deliveries): the intake records both runs on the
    issue's one ``planning`` task; the older is still running when the newer starts."""
    runs = []
    for delivery in ("delivery-1", "delivery-2"):
        ingested = await world.store.ingest(make_ingest(world.clock, delivery_id=delivery, executor="local"))
        assert ingested.ids is not None
        submitted = await world.runtime.dispatcher.dispatch(ingested.ids.run_id)
        assert submitted is not None and submitted.status is RunStatus.SUBMITTED
        await world.heartbeat(submitted, f"{delivery}-started")
        runs.append(world.run(submitted))
        world.clock.advance(1)
    older, newer = runs
    assert older.task_id == newer.task_id
    assert (older.status, newer.status, world.task(newer).state) == (
        RunStatus.RUNNING,
        RunStatus.RUNNING,
        TaskState.RUNNING,
    )
    return older, newer


@pytest.mark.parametrize("action", ["retry", "cancel"])
async def test_an_older_run_going_silent_leaves_its_tasks_newer_run_alone(action: str) -> None:
    async with make_world(FACTEUR_SCHEDULER__STUCK_ACTION=action) as world:
        older, newer = await two_runs_of_one_task(world)
        world.clock.advance(HEARTBEAT_TIMEOUT - 5)
        await world.heartbeat(newer, "newer-alive")  # the newer run is healthy
        world.clock.advance(10)
        result = await world.sweep()
        assert result.stuck == 1
        # the stuck run is not its task's latest: like its end (settle_run), its silence must not touch
        # the task, nor the newer run that is reporting
        assert world.run(newer).status is RunStatus.RUNNING
        assert world.task(newer).state is TaskState.RUNNING
        assert world.run(older).status.terminal
        assert world.executor.cancels == [WorkflowRef("local", "scripted", str(older.workflow_name))]


@pytest.mark.parametrize("action", ["retry", "cancel"])
async def test_a_silent_run_whose_task_is_done_does_not_stop_the_sweep(action: str) -> None:
    async with make_world(FACTEUR_SCHEDULER__STUCK_ACTION=action) as world:
        older, newer = await two_runs_of_one_task(world)
        answer = await world.runtime.run_reports.receive(
            newer.id, parse_report({"id": "end", "type": "completed", "outcome": "succeeded"})
        )
        assert answer.status == 202
        assert world.task(newer).state is TaskState.SUCCEEDED
        assert world.run(older).status is RunStatus.RUNNING
        world.clock.advance(HEARTBEAT_TIMEOUT + 1)
        unplanned = await world.unplanned_idea(IdeaSource.API, "unplanned-1")
        result = await world.sweep()  # must not raise: the rest of the sweep still has work to do
        assert (result.stuck, result.planned) == (1, 1)
        assert await world.idea_state(unplanned) is IdeaState.PLANNING
        assert world.run(older).status.terminal
        assert world.executor.cancels == [WorkflowRef("local", "scripted", str(older.workflow_name))]
        assert world.task(newer).state is TaskState.SUCCEEDED
        world.clock.advance(RECONCILE)
        assert (await world.sweep()).stuck == 0  # found stuck once
        assert world.runtime.reconciler.stuck_total == 1


# --- lost reactions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("started", [False, True], ids=["queued-task", "running-task"])
async def test_a_run_that_ended_without_its_reaction_is_settled(world: World, started: bool) -> None:
    idea_id, run = await one_running_task(world, ("a", []), ("b", ["a"]))
    if started:
        await world.heartbeat(run, "hb-1")
    expected_task = TaskState.RUNNING if started else TaskState.QUEUED
    # the run's end was recorded, then the process stopped before its task and idea moved
    await world.store.update_run(
        run.id, RunUpdate(status=RunStatus.SUCCEEDED, finished_at=world.clock.now()), None
    )
    assert world.task(run).state is expected_task
    result = await world.sweep()
    assert result.resettled == 1
    assert await world.states(idea_id) == {"a": "succeeded", "b": "ready"}
    assert (await world.sweep()).resettled == 0

    [b_run] = await world.dispatch()
    await world.store.update_run(
        b_run.id, RunUpdate(status=RunStatus.SUCCEEDED, finished_at=world.clock.now()), None
    )
    assert (await world.sweep()).resettled == 1
    assert await world.idea_state(idea_id) is IdeaState.COMPLETED


async def test_a_run_that_failed_without_its_reaction_has_its_task_retried(world: World) -> None:
    _, run = await one_running_task(world, ("a", []))
    await world.store.update_run(run.id, RunUpdate(status=RunStatus.FAILED, detail="crashed"), None)
    assert (await world.sweep()).resettled == 1
    task = world.task(run)
    assert (task.state, task.attempts) == (TaskState.READY, 1)
    assert task.not_before == world.clock.now() + timedelta(seconds=BACKOFF)
    assert (await world.sweep()).resettled == 0


# --- ideas whose planning never started -------------------------------------------------------------------


@pytest.mark.parametrize("source", [IdeaSource.API, IdeaSource.CLI])
async def test_an_idea_registered_without_a_plan_gets_its_planning_run(
    world: World, source: IdeaSource
) -> None:
    idea_id = await world.unplanned_idea(source, "unplanned-1")
    result = await world.sweep()
    assert result.planned == 1
    detail = await world.store.idea_detail(idea_id)
    assert detail.idea.state is IdeaState.PLANNING
    assert await world.states(idea_id) == {"planning": "queued"}
    [run] = detail.runs
    assert (run.stage, run.status, run.attempt, run.executor) == (
        Stage.PLANNING,
        RunStatus.SUBMITTED,
        1,
        "local",
    )
    assert world.executor.submissions == [run.workflow_name]

    assert (await world.sweep()).planned == 0  # planned once
    assert len((await world.store.idea_detail(idea_id)).runs) == 1


async def test_an_idea_from_a_github_issue_is_not_planned_by_the_sweep(world: World) -> None:
    idea_id = await world.unplanned_idea(IdeaSource.GITHUB_ISSUE, "acme/widgets#7")
    result = await world.sweep()
    assert result.planned == 0
    detail = await world.store.idea_detail(idea_id)
    assert detail.idea.state is IdeaState.REGISTERED
    assert (detail.tasks, detail.runs) == ([], [])
    assert world.executor.submissions == []


# --- expired claims ---------------------------------------------------------------------------------------


async def claimed_but_not_submitted(world: World) -> Run:
    """A claimed task whose run's submission failed: it stays queued under the scheduler's claim."""
    await world.submit(plan(("a", [])))
    world.executor.failing = True
    result = await world.runtime.scheduler.pass_once()
    assert (result.claimed, result.submitted) == (1, 0)
    [run] = world.store.runs.values()
    task = world.task(run)
    assert (run.status, task.state) == (RunStatus.QUEUED, TaskState.QUEUED)
    assert task.claimed_by == world.runtime.scheduler.holder
    assert task.claim_expires_at == world.clock.now() + timedelta(seconds=CLAIM)
    assert len(await world.events(run, "run.submit_failed")) == 1
    return run


async def test_an_expired_claim_is_taken_over_and_its_run_submitted_once(world: World) -> None:
    run = await claimed_but_not_submitted(world)
    world.executor.failing = False
    world.clock.advance(CLAIM - 1)
    assert (await world.sweep()).taken_over == 0  # the claim still holds
    assert await world.runtime.dispatcher.resubmit_pending() == 0  # a claimed run is the claimant's
    assert await world.dispatch() == []
    assert world.run(run).status is RunStatus.QUEUED
    assert world.executor.submissions == [run.workflow_name]  # the failed attempt only

    world.clock.advance(1)
    result = await world.sweep()
    assert result.taken_over == 1
    submitted = world.run(run)
    assert (submitted.status, submitted.submitted_at) == (RunStatus.SUBMITTED, world.clock.now())
    task = world.task(run)
    assert task.claim_expires_at == world.clock.now() + timedelta(seconds=CLAIM)
    assert task.claimed_by == world.runtime.scheduler.holder  # the runtime's reconciler is the same replica

    await world.sweep()
    world.clock.advance(CLAIM + 1)
    assert (await world.sweep()).taken_over == 0
    assert world.executor.submissions == [run.workflow_name, run.workflow_name]
    assert list(world.executor.submitted) == [run.workflow_name]
    assert len(await world.events(run, "run.submitted")) == 1
    assert len(world.store.runs) == 1


async def test_a_taken_over_claim_whose_submission_fails_again_waits_for_its_new_claim_to_expire(
    world: World,
) -> None:
    run = await claimed_but_not_submitted(world)
    world.clock.advance(CLAIM)
    assert (await world.sweep()).taken_over == 0  # taken over, but the executor still fails
    assert len(world.executor.submissions) == 2
    assert world.task(run).claim_expires_at == world.clock.now() + timedelta(seconds=CLAIM)
    world.clock.advance(CLAIM - 1)
    await world.sweep()
    assert len(world.executor.submissions) == 2  # the new claim holds
    world.executor.failing = False
    world.clock.advance(1)
    assert (await world.sweep()).taken_over == 1
    assert world.run(run).status is RunStatus.SUBMITTED
    assert len(await world.events(run, "run.submit_failed")) == 2


# --- the lease --------------------------------------------------------------------------------------------


def other_replica(world: World, holder: str = "replica-b") -> Reconciler:
    runtime = world.runtime
    return Reconciler(
        store=world.store,
        dispatcher=runtime.dispatcher,
        driver=runtime.driver,
        clock=world.clock,
        settings=runtime.settings.scheduler,
        holder=holder,
        execution_topic=runtime.settings.bus.topics.codex_execution,
    )


async def test_one_replica_sweeps_while_it_holds_the_lease(world: World) -> None:
    first, second = world.runtime.reconciler, other_replica(world)
    assert await first.sweep() is not None
    idea_id = await world.unplanned_idea(IdeaSource.API, "unplanned-1")
    assert await second.sweep() is None
    assert second.sweeps == 0
    assert await world.idea_state(idea_id) is IdeaState.REGISTERED  # the refused sweep did nothing

    world.clock.advance(RECONCILE)
    renewed = await first.sweep()  # the holder renews its lease with each sweep
    assert renewed is not None and renewed.planned == 1
    world.clock.advance(RECONCILE + 5)  # past the first lease, within the renewed one
    assert await second.sweep() is None

    world.clock.advance(RECONCILE)  # the holder stopped sweeping: its lease ran out
    assert await second.sweep() is not None
    assert second.sweeps == 1
    assert world.store.leases["reconciler"][0] == "replica-b"
    assert await first.sweep() is None
    assert first.sweeps == 2


# --- stops that did not take -------------------------------------------------------------------------------


class UnstoppableOnce(ScriptedExecutor):
    """The first request to stop a workflow fails (the executor is away); the workflow keeps running."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 1

    async def cancel(self, ref: WorkflowRef) -> None:
        self.cancels.append(ref)
        if self.refusals:
            self.refusals -= 1
            raise ExecutorError("executor unreachable")
        self.phases[ref.name] = WorkflowPhase.CANCELLED


async def test_a_cancelled_runs_workflow_still_going_is_stopped_again() -> None:
    async with make_world(UnstoppableOnce()) as world:
        idea_id, run = await one_running_task(world, ("a", []))
        world.executor.set_phase(run, WorkflowPhase.RUNNING)
        await world.runtime.driver.cancel(idea_id, by="ops", reason="no")
        assert world.run(run).status is RunStatus.CANCELLED and len(world.executor.cancels) == 1
        world.clock.advance(RECONCILE)
        assert (await world.sweep()).restopped == 1
        assert len(world.executor.cancels) == 2
        world.clock.advance(RECONCILE)
        assert (await world.sweep()).restopped == 0  # now it is stopped: asked, left alone
        assert len(world.executor.cancels) == 2
        asked = len(world.executor.asked)
        world.clock.advance(RECONCILE)
        await world.sweep()
        assert world.executor.asked[asked:].count(str(run.workflow_name)) == 0  # seen ended: not asked again


async def test_a_stop_that_never_takes_is_given_up_after_the_window() -> None:
    executor = UnstoppableOnce()
    executor.refusals = 1000
    async with make_world(executor) as world:
        idea_id, run = await one_running_task(world, ("a", []))
        world.executor.set_phase(run, WorkflowPhase.RUNNING)
        await world.runtime.driver.cancel(idea_id, by="ops", reason="no")
        world.clock.advance(RECONCILE)
        assert (await world.sweep()).restopped == 1
        world.clock.advance(3600)
        assert (await world.sweep()).restopped == 0


async def test_a_stuck_review_run_with_stuck_action_cancel_is_reviewed_again(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text("pipelines:\n  acme/widgets:\n    stages: [review]\n")
    async with make_world(FACTEUR_SCHEDULER__STUCK_ACTION="cancel", FACTEUR_CONFIG_FILE=str(config)) as world:
        idea_id, run = await one_running_task(world, ("a", []))
        answer = await world.runtime.run_reports.receive(
            run.id, parse_report({"id": "end", "type": "completed", "outcome": "succeeded"})
        )
        assert answer.status == 202
        detail = await world.store.idea_detail(idea_id)
        review = max((r for r in detail.runs if r.stage is Stage.REVIEW), key=lambda r: r.attempt)
        await world.heartbeat(review, "hb-1")
        world.clock.advance(HEARTBEAT_TIMEOUT + 1)
        assert (await world.sweep()).stuck == 1
        assert world.run(review).status is RunStatus.CANCELLED
        detail = await world.store.idea_detail(idea_id)
        again = max((r for r in detail.runs if r.stage is Stage.REVIEW), key=lambda r: r.attempt)
        assert again.attempt == 2 and again.status is RunStatus.SUBMITTED
        assert detail.idea.state is IdeaState.QA_REVIEW


async def test_a_sweep_writes_nothing_for_a_run_whose_phase_did_not_change(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run = await one_running_task(world, ("a", []))
    world.executor.set_phase(run, WorkflowPhase.RUNNING)
    await world.sweep()  # submitted -> running: one write
    assert world.run(run).status is RunStatus.RUNNING
    writes: list[uuid.UUID] = []
    update_run = world.store.update_run

    async def counted(run_id: uuid.UUID, *args: Any, **kwargs: Any) -> Run | None:
        writes.append(run_id)
        return await update_run(run_id, *args, **kwargs)

    monkeypatch.setattr(world.store, "update_run", counted)
    for _ in range(3):
        assert (await world.sweep()).refreshed == 1
    assert writes == []
    world.executor.set_phase(run, WorkflowPhase.SUCCEEDED)
    await world.sweep()
    assert writes == [run.id] and world.run(run).status is RunStatus.SUCCEEDED
