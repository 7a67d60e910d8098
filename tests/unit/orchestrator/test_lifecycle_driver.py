"""The lifecycle driver and the scheduler on the in-memory store: what happens to ideas, tasks and runs when
runs start, end and fail, when plans arrive, and when people approve, pause, cancel and retry."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facteur.domain.events import verify_chain
from facteur.domain.ideas import IdeaState
from facteur.domain.lifecycle import IllegalTransition
from facteur.domain.plans import plan_from_json, render_plan
from facteur.domain.run_reports import parse_report
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import TaskState
from facteur.errors import Conflict, InvalidInput, NotFound, WorkflowRefused
from facteur.executors import port as executor_port
from facteur.executors.none import NoneExecutor
from facteur.orchestrator.ideas import Submission
from facteur.runtime import Runtime, build_runtime
from facteur.settings import load_settings
from facteur.store.memory import MemoryStore
from facteur.store.port import IdeaDetail
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock, SequentialIds


def plan(*tasks: tuple[str, list[str]], heavy: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "tasks": [
            {
                "key": key,
                "title": f"Task {key}",
                "depends_on": deps,
                "acceptance_criteria": [f"{key} works"],
                "heavy": key in heavy,
            }
            for key, deps in tasks
        ]
    }


class World:
    def __init__(
        self, runtime: Runtime, store: MemoryStore, clock: FakeClock, executor: NoneExecutor
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.clock = clock
        self.executor = executor

    async def submit(self, document: dict[str, Any] | None = None, **fields: Any) -> uuid.UUID:
        fields.setdefault("repository", "acme/widgets")
        result = await self.runtime.ideas.submit(
            Submission(title=fields.pop("title", "An idea"), goal="done", plan_json=document, **fields)
        )
        return result.detail.idea.id

    async def detail(self, idea_id: uuid.UUID) -> IdeaDetail:
        return await self.store.idea_detail(idea_id)

    async def states(self, idea_id: uuid.UUID) -> dict[str, str]:
        return {v.task.key: v.task.state.value for v in (await self.detail(idea_id)).tasks}

    async def dispatch(self) -> list[Run]:
        await self.runtime.scheduler.pass_once()
        return [r for r in self.store.runs.values() if r.status is RunStatus.SUBMITTED]

    async def end(self, run: Run, outcome: str = "succeeded", event: str = "end") -> None:
        answer = await self.runtime.run_reports.receive(
            run.id, parse_report({"id": event, "type": "completed", "outcome": outcome})
        )
        assert answer.status == 202

    def run_of(self, key: str, idea: IdeaDetail) -> Run:
        task_id = next(v.task.id for v in idea.tasks if v.task.key == key)
        return max((r for r in idea.runs if r.task_id == task_id), key=lambda r: r.attempt)

    async def kinds(self, idea_id: uuid.UUID) -> list[str]:
        return [e.kind for e in await self.store.list_events(idea_id=idea_id)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async for made in make_world():
        yield made


async def make_world(config: Path | None = None, **env: str) -> AsyncIterator[World]:
    clock = FakeClock()
    store = MemoryStore(clock)
    executor = NoneExecutor()
    settings = load_settings(
        config,
        environ={
            "FACTEUR_EXECUTOR__KIND": "none",
            "FACTEUR_SCHEDULER__MAX_CONCURRENT": "10",
            "FACTEUR_SCHEDULER__MAX_PER_REPOSITORY": "10",
            "FACTEUR_SCHEDULER__MAX_HEAVY": "1",
            **env,
        },
    )
    runtime = await build_runtime(settings, clock=clock, ids=SequentialIds(), store=store, executor=executor)
    try:
        yield World(runtime, store, clock, executor)
    finally:
        await runtime.close()


async def test_dependents_run_after_their_dependencies_and_the_idea_completes(world: World) -> None:
    idea_id = await world.submit(plan(("a", []), ("b", []), ("c", ["a", "b"])))
    first = await world.dispatch()
    assert sorted(world.store.tasks[r.task_id].key for r in first) == ["a", "b"]
    assert (await world.detail(idea_id)).idea.state is IdeaState.RUNNING_TASKS
    detail = await world.detail(idea_id)
    await world.end(world.run_of("a", detail))
    assert (await world.states(idea_id))["c"] == "pending"
    await world.end(world.run_of("b", detail))
    assert (await world.states(idea_id))["c"] == "ready"
    await world.dispatch()
    await world.end(world.run_of("c", await world.detail(idea_id)))
    done = await world.detail(idea_id)
    assert done.idea.state is IdeaState.COMPLETED
    events = await world.store.list_events(idea_id=idea_id)
    last = [e for e in events if e.kind == "idea.transition"][-1]
    assert last.payload["skipped"] == ["qa_review", "integration", "deployment", "monitoring"]
    assert [e.payload["stage"] for e in events if e.kind == "stage.skipped"] == [
        "qa_review",
        "integration",
        "deployment",
        "monitoring",
    ]
    assert verify_chain(await world.store.list_events()) is None


async def test_a_pipeline_stage_is_entered_not_skipped(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text("pipelines:\n  acme/widgets:\n    stages: [review]\n")
    async for world in make_world(config):
        idea_id = await world.submit(plan(("a", [])))
        [run] = await world.dispatch()
        await world.end(run)
        assert (await world.detail(idea_id)).idea.state is IdeaState.QA_REVIEW


async def test_review_runs_on_the_branches_no_task_builds_on_then_completes_the_idea(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text("pipelines:\n  acme/widgets:\n    stages: [review]\n")
    async for world in make_world(config):
        idea_id = await world.submit(plan(("a", []), ("b", []), ("c", ["a", "b"])))
        for _ in range(2):
            for run in await world.dispatch():
                await world.runtime.run_reports.receive(
                    run.id,
                    parse_report(
                        {
                            "id": "end",
                            "type": "completed",
                            "outcome": "succeeded",
                            "branch": f"work/{world.store.tasks[run.task_id].key}",
                            "pull_request": f"local://acme/widgets/pull/{world.store.tasks[run.task_id].key}",
                        }
                    ),
                )
        detail = await world.detail(idea_id)
        assert detail.idea.state is IdeaState.QA_REVIEW
        review = world.run_of("review", detail)
        assert (review.stage, review.status, review.attempt) == (Stage.REVIEW, RunStatus.SUBMITTED, 1)
        body = json.loads(world.store.payloads[review.id][0])
        # only c is reviewed: a and b are in c's branch
        assert body["stage"] == "review" and body["head"] == "work/c"
        assert body["facteur"]["targets"] == [
            {"key": "c", "title": "Task c", "branch": "work/c", "pullRequest": "local://acme/widgets/pull/c"}
        ]
        assert "#### c" in body["facteur"]["plan"]["markdown"]
        # changes requested: reviewed again at once, then approved
        await world.end(review, "failed")
        again = world.run_of("review", await world.detail(idea_id))
        assert (again.attempt, again.status) == (2, RunStatus.SUBMITTED)
        await world.end(again)
        done = await world.detail(idea_id)
        assert done.idea.state is IdeaState.COMPLETED
        kinds = await world.kinds(idea_id)
        assert kinds.count("stage.skipped") == 3  # integration, deployment, monitoring


async def test_a_review_that_never_approves_fails_the_idea(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text("pipelines:\n  acme/widgets:\n    stages: [review]\n")
    async for world in make_world(config, FACTEUR_SCHEDULER__MAX_ATTEMPTS="2"):
        idea_id = await world.submit(plan(("a", [])))
        [run] = await world.dispatch()
        await world.end(run)
        for _ in range(2):
            await world.end(world.run_of("review", await world.detail(idea_id)), "failed")
        detail = await world.detail(idea_id)
        assert detail.idea.state is IdeaState.FAILED
        assert world.run_of("review", detail).attempt == 2


async def test_a_failed_task_backs_off_then_fails_the_idea_and_stops_the_rest() -> None:
    async for world in make_world(
        FACTEUR_SCHEDULER__MAX_ATTEMPTS="3", FACTEUR_SCHEDULER__RETRY_BACKOFF_SECONDS="10"
    ):
        idea_id = await world.submit(plan(("a", []), ("b", []), ("c", ["a"])))
        await world.dispatch()
        detail = await world.detail(idea_id)
        await world.end(world.run_of("a", detail), "failed")
        task = world.store.tasks[world.run_of("a", detail).task_id]
        assert (task.state, task.attempts) == (TaskState.READY, 1)
        assert task.not_before == world.clock.now() + timedelta(seconds=10)
        assert await world.dispatch() == [world.run_of("b", detail)]  # a waits for its back-off
        world.clock.advance(10)
        await world.dispatch()
        second = world.run_of("a", await world.detail(idea_id))
        assert second.attempt == 2
        await world.end(second, "failed")
        assert world.store.tasks[second.task_id].not_before == world.clock.now() + timedelta(seconds=20)
        world.clock.advance(20)
        await world.dispatch()
        third = world.run_of("a", await world.detail(idea_id))
        await world.end(third, "failed")
        ended = await world.detail(idea_id)
        assert ended.idea.state is IdeaState.FAILED
        assert await world.states(idea_id) == {"a": "failed", "b": "cancelled", "c": "cancelled"}
        assert world.run_of("b", ended).status is RunStatus.CANCELLED
        b_name = world.run_of("b", ended).workflow_name
        assert b_name is not None and b_name in world.executor.cancelled


async def test_block_policy_keeps_the_idea_and_a_person_retries() -> None:
    async for world in make_world(
        FACTEUR_SCHEDULER__MAX_ATTEMPTS="1", FACTEUR_SCHEDULER__ON_EXHAUSTED="block"
    ):
        idea_id = await world.submit(plan(("a", [])))
        [run] = await world.dispatch()
        await world.end(run, "failed")
        assert await world.states(idea_id) == {"a": "blocked"}
        assert (await world.detail(idea_id)).idea.state is IdeaState.RUNNING_TASKS
        assert "idea.stalled" in await world.kinds(idea_id)
        await world.runtime.driver.retry_task(run.task_id, by="ops")
        task = world.store.tasks[run.task_id]
        assert (task.state, task.attempts) == (TaskState.READY, 0)
        [again] = [r for r in await world.dispatch() if r.id != run.id]
        assert again.attempt == 2  # runs are numbered on; the budget is the task's own count
        with pytest.raises(Conflict, match="only a failed or blocked task can be retried"):
            await world.runtime.driver.retry_task(run.task_id, by="ops")
        await world.end(again, "succeeded", event="again")  # the retry's run settles the task
        assert (await world.detail(idea_id)).idea.state is IdeaState.COMPLETED


async def test_an_old_attempts_late_end_changes_nothing(world: World) -> None:
    idea_id = await world.submit(plan(("a", [])))
    [first] = await world.dispatch()
    await world.end(first, "failed")
    world.clock.advance(3600)
    [second] = [r for r in await world.dispatch() if r.id != first.id]
    before = await world.states(idea_id)
    await world.runtime.driver.run_changed(first)  # the first attempt's end, seen again
    assert await world.states(idea_id) == before == {"a": "queued"}
    await world.end(second, "succeeded", event="second")
    assert (await world.detail(idea_id)).idea.state is IdeaState.COMPLETED


async def test_an_idea_without_a_plan_is_planned_and_its_plan_goes_through_the_gate(world: World) -> None:
    idea_id = await world.submit(None)
    detail = await world.detail(idea_id)
    assert detail.idea.state is IdeaState.PLANNING
    [run] = detail.runs
    assert (run.stage, run.status) == (Stage.PLANNING, RunStatus.SUBMITTED)
    markdown = render_plan(plan_from_json(plan(("a", []), ("b", ["a"]))))
    answer = await world.runtime.run_reports.receive(
        run.id, parse_report({"id": "p", "type": "plan", "markdown": markdown})
    )
    assert answer.status == 202 and answer.body["planVersion"] == 1
    await world.end(run)
    after = await world.detail(idea_id)
    assert after.idea.state is IdeaState.AWAITING_DEPENDENCIES and after.idea.plan_version == 1
    assert await world.states(idea_id) == {"planning": "succeeded", "a": "ready", "b": "pending"}


async def test_a_planning_run_without_a_plan_is_planned_again_then_fails() -> None:
    async for world in make_world(FACTEUR_SCHEDULER__MAX_ATTEMPTS="2"):
        idea_id = await world.submit(None)
        [first] = (await world.detail(idea_id)).runs
        await world.end(first)  # succeeded, but no plan came
        runs = (await world.detail(idea_id)).runs
        assert [(r.attempt, r.status) for r in runs] == [(1, RunStatus.SUCCEEDED), (2, RunStatus.SUBMITTED)]
        await world.end(runs[1], "failed", event="2")
        ended = await world.detail(idea_id)
        assert ended.idea.state is IdeaState.FAILED


async def test_approval_by_a_person_builds_the_tasks_of_the_chosen_version() -> None:
    async for world in make_world(FACTEUR_APPROVALS__REQUIRED="true"):
        driver = world.runtime.driver
        idea_id = await world.submit(plan(("a", [])))
        assert (await world.detail(idea_id)).idea.state is IdeaState.AWAITING_APPROVAL
        await driver.submit_plan(idea_id, markdown=None, document=plan(("x", []), ("y", ["x"])), source="api")
        with pytest.raises(InvalidInput, match="no plan version 7"):
            await driver.approve(idea_id, approve=True, version=7, by="ana", reason=None)
        await driver.approve(idea_id, approve=True, version=2, by="ana", reason="looks right")
        detail = await world.detail(idea_id)
        assert detail.idea.plan_version == 2 and detail.idea.state is IdeaState.AWAITING_DEPENDENCIES
        assert await world.states(idea_id) == {"x": "ready", "y": "pending"}
        assert [(a.decision, a.decided_by, a.plan_version) for a in detail.approvals] == [
            ("approved", "ana", 2)
        ]
        with pytest.raises(Conflict, match="only an idea awaiting approval"):
            await driver.approve(idea_id, approve=True, version=None, by="ana", reason=None)

        rejected = await world.submit(plan(("a", [])), title="Another")
        await driver.approve(rejected, approve=False, version=None, by="ana", reason="too risky")
        assert (await world.detail(rejected)).idea.state is IdeaState.CANCELLED


async def test_pause_holds_dispatch_and_resume_releases_it(world: World) -> None:
    driver = world.runtime.driver
    idea_id = await world.submit(plan(("a", [])))
    await driver.pause(idea_id, by="ops", reason="wait")
    await driver.pause(idea_id, by="ops", reason="again")  # changes nothing
    assert await world.dispatch() == []
    assert (await world.kinds(idea_id)).count("idea.paused") == 1
    await driver.resume(idea_id, by="ops", reason=None)
    assert len(await world.dispatch()) == 1


async def test_cancel_stops_runs_and_a_finished_idea_refuses_with_an_event(world: World) -> None:
    driver = world.runtime.driver
    idea_id = await world.submit(plan(("a", []), ("b", ["a"])))
    [run] = await world.dispatch()
    await driver.cancel(idea_id, by="ops", reason="no longer needed")
    detail = await world.detail(idea_id)
    assert detail.idea.state is IdeaState.CANCELLED
    assert await world.states(idea_id) == {"a": "cancelled", "b": "cancelled"}
    assert detail.runs[0].status is RunStatus.CANCELLED
    assert run.workflow_name in world.executor.cancelled

    done = await world.submit(plan(("z", [])), title="Finished")
    [z] = await world.dispatch()
    await world.end(z)
    with pytest.raises(IllegalTransition, match="completed is terminal"):
        await driver.cancel(done, by="ops", reason=None)
    assert (await world.kinds(done))[-1] == "transition.refused"
    with pytest.raises(Conflict, match="a finished idea cannot be paused"):
        await driver.pause(done, by="ops", reason=None)
    with pytest.raises(NotFound):
        await driver.pause(uuid.uuid4(), by="ops", reason=None)


async def test_cancelling_a_task_blocks_its_dependents_and_the_rest_completes(world: World) -> None:
    driver = world.runtime.driver
    idea_id = await world.submit(plan(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", [])))
    await world.dispatch()
    detail = await world.detail(idea_id)
    await driver.cancel_task(world.run_of("a", detail).task_id, by="ops", reason="not needed")
    assert await world.states(idea_id) == {"a": "cancelled", "b": "blocked", "c": "blocked", "d": "queued"}
    await world.end(world.run_of("d", detail))
    assert (await world.detail(idea_id)).idea.state is IdeaState.RUNNING_TASKS  # b and c are blocked

    other = await world.submit(plan(("p", []), ("q", [])), title="Drop one")
    await world.dispatch()
    shown = await world.detail(other)
    await driver.cancel_task(world.run_of("q", shown).task_id, by="ops", reason=None)
    await world.end(world.run_of("p", shown))
    assert (await world.detail(other)).idea.state is IdeaState.COMPLETED

    alone = await world.submit(plan(("solo", [])), title="Nothing left")
    [solo] = [r for r in await world.dispatch() if r.idea_id == alone]
    await driver.cancel_task(solo.task_id, by="ops", reason=None)
    assert (await world.detail(alone)).idea.state is IdeaState.CANCELLED


async def test_the_scheduler_orders_by_priority_then_age_within_the_heavy_limit(world: World) -> None:
    world.runtime.scheduler.limits = type(world.runtime.scheduler.limits)(
        max_concurrent=3, max_per_repository=3, max_heavy=1
    )
    await world.submit(plan(("l1", []), ("l2", [])), priority=3, title="low")
    world.clock.advance(1)
    await world.submit(plan(("h1", []), ("h2", []), heavy=("h1", "h2")), priority=0, title="high")
    world.clock.advance(1)
    await world.submit(plan(("m1", [])), priority=1, title="mid")
    await world.dispatch()
    claims = [
        e.payload["key"]
        for e in await world.store.list_events()
        if e.kind == "task.transition" and e.payload["trigger"] == "claimed"
    ]
    # in claim order: the highest priority first; h2 is held back by the heavy limit; then mid; then the
    # oldest of the low ones (l2 waits: three slots)
    assert claims == ["h1", "m1", "l1"]


async def test_a_plan_from_a_person_stops_the_planning_run_and_its_task_cannot_be_cancelled(
    world: World,
) -> None:
    driver = world.runtime.driver
    idea_id = await world.submit(None)
    [planning] = (await world.detail(idea_id)).runs
    with pytest.raises(Conflict, match="cancel the idea, or send a plan"):
        await driver.cancel_task(planning.task_id, by="ops", reason=None)
    await driver.submit_plan(idea_id, markdown=None, document=plan(("a", [])), source="api")
    detail = await world.detail(idea_id)
    assert detail.idea.state is IdeaState.AWAITING_DEPENDENCIES
    assert world.store.runs[planning.id].status is RunStatus.CANCELLED
    assert planning.workflow_name in world.executor.cancelled
    assert await world.states(idea_id) == {"planning": "cancelled", "a": "ready"}
    # the planning run's own end, arriving late, changes nothing
    await world.runtime.driver.run_changed(world.store.runs[planning.id])
    assert await world.states(idea_id) == {"planning": "cancelled", "a": "ready"}


async def test_a_stored_plan_whose_reaction_was_lost_is_applied_when_its_run_ends(world: World) -> None:
    idea_id = await world.submit(None)
    [run] = (await world.detail(idea_id)).runs
    world.runtime.run_reports.on_plan = None  # the process stops between storing the plan and reacting
    markdown = render_plan(plan_from_json(plan(("a", []))))
    answer = await world.runtime.run_reports.receive(
        run.id, parse_report({"id": "p", "type": "plan", "markdown": markdown})
    )
    assert answer.body["planVersion"] == 1
    assert (await world.detail(idea_id)).idea.state is IdeaState.PLANNING
    await world.end(run)  # not "ended without a plan": the stored plan goes through the gate
    detail = await world.detail(idea_id)
    assert detail.idea.state is IdeaState.AWAITING_DEPENDENCIES and len(detail.runs) == 1
    assert await world.states(idea_id) == {"planning": "succeeded", "a": "ready"}


async def test_a_stopped_runs_plan_is_not_taken_and_a_rejection_stops_planning() -> None:
    async for world in make_world(FACTEUR_APPROVALS__REQUIRED="true"):
        driver = world.runtime.driver
        idea_id = await world.submit(None)
        [run] = (await world.detail(idea_id)).runs
        markdown = render_plan(plan_from_json(plan(("a", []))))
        sent = await world.runtime.run_reports.receive(
            run.id, parse_report({"id": "p", "type": "plan", "markdown": markdown})
        )
        assert sent.status == 202 and (await world.detail(idea_id)).idea.state is IdeaState.AWAITING_APPROVAL
        await driver.approve(idea_id, approve=False, version=None, by="ana", reason="no")
        detail = await world.detail(idea_id)
        assert detail.idea.state is IdeaState.CANCELLED
        assert world.store.runs[run.id].status is RunStatus.CANCELLED  # the planning run is stopped too
        late = await world.runtime.run_reports.receive(
            run.id, parse_report({"id": "p2", "type": "plan", "markdown": markdown})
        )
        assert (late.status, late.body["error"]) == (422, "plan not taken")
        assert len((await world.detail(idea_id)).plans) == 1


async def test_the_scheduler_leaves_tasks_outside_the_plan_alone(world: World) -> None:
    ingested = await world.store.ingest(make_ingest(world.clock, delivery_id="froussard-1"))
    assert ingested.ids is not None
    task = world.store.tasks[ingested.ids.task_id]
    world.store.tasks[task.id] = dataclasses.replace(task, state=TaskState.READY)
    idea = world.store.ideas[ingested.ids.idea_id]
    world.store.ideas[idea.id] = dataclasses.replace(idea, state=IdeaState.RUNNING_TASKS)
    assert await world.dispatch() == []
    with pytest.raises(Conflict, match="not a task of the idea's plan"):
        await world.runtime.driver.retry_task(task.id, by="ops")


class RefusingExecutor(NoneExecutor):
    """Refuses every implementation run, as the Argo executor refuses an event too large for its pod."""

    async def submit(self, request: executor_port.WorkflowRequest) -> executor_port.Submission:
        if request.stage is Stage.IMPLEMENTATION:
            raise WorkflowRefused("the event is too large for the pod")
        return await super().submit(request)


async def test_a_run_the_executor_refuses_fails_with_the_reason_instead_of_waiting() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    settings = load_settings(
        None, environ={"FACTEUR_EXECUTOR__KIND": "none", "FACTEUR_SCHEDULER__MAX_ATTEMPTS": "2"}
    )
    executor = RefusingExecutor()
    runtime = await build_runtime(settings, clock=clock, ids=SequentialIds(), store=store, executor=executor)
    try:
        world = World(runtime, store, clock, executor)
        idea_id = await world.submit(plan(("a", [])))
        await runtime.scheduler.pass_once()
        detail = await world.detail(idea_id)
        first = world.run_of("a", detail)
        assert first.status is RunStatus.FAILED
        assert first.detail == "refused by the executor: the event is too large for the pod"
        assert (await world.states(idea_id))["a"] == "ready"  # retried after its back-off
        clock.advance(3600)
        await runtime.scheduler.pass_once()
        detail = await world.detail(idea_id)
        assert detail.idea.state is IdeaState.FAILED
        assert not executor.submitted
    finally:
        await runtime.close()


def review_pipeline(tmp_path: Path) -> Path:
    config = tmp_path / "facteur.yaml"
    config.write_text("pipelines:\n  acme/widgets:\n    stages: [review]\n")
    return config


async def test_the_review_task_is_not_cancelled_on_its_own(tmp_path: Path) -> None:
    async for world in make_world(review_pipeline(tmp_path)):
        idea_id = await world.submit(plan(("a", [])))
        [run] = await world.dispatch()
        await world.end(run)
        review = world.run_of("review", await world.detail(idea_id))
        with pytest.raises(Conflict, match="cancel the idea instead"):
            await world.runtime.driver.cancel_task(review.task_id, by="alice", reason="x")
        assert (await world.states(idea_id))["review"] == "queued"


async def test_a_paused_ideas_review_waits_for_it_to_resume(tmp_path: Path) -> None:
    async for world in make_world(review_pipeline(tmp_path)):
        idea_id = await world.submit(plan(("a", [])))
        [run] = await world.dispatch()
        await world.runtime.driver.pause(idea_id, by="alice", reason="hold")
        await world.end(run)  # the run in flight finishes
        detail = await world.detail(idea_id)
        assert detail.idea.state is IdeaState.QA_REVIEW
        assert (await world.states(idea_id))["review"] == "ready"
        assert [r for r in detail.runs if r.stage is Stage.REVIEW] == []
        await world.runtime.driver.resume(idea_id, by="alice", reason=None)
        review = world.run_of("review", await world.detail(idea_id))
        assert (review.attempt, review.status) == (1, RunStatus.SUBMITTED)
        # a review that requests changes while the idea is paused waits too
        await world.runtime.driver.pause(idea_id, by="alice", reason="again")
        await world.end(review, "failed")
        assert world.run_of("review", await world.detail(idea_id)).id == review.id
        assert (await world.states(idea_id))["review"] == "ready"
        await world.runtime.driver.resume(idea_id, by="alice", reason=None)
        again = world.run_of("review", await world.detail(idea_id))
        assert (again.attempt, again.status) == (2, RunStatus.SUBMITTED)


async def test_the_review_leaves_out_a_cancelled_tasks_branch(tmp_path: Path) -> None:
    async for world in make_world(review_pipeline(tmp_path)):
        idea_id = await world.submit(plan(("a", []), ("b", []), ("c", ["a", "b"])))
        c = next(v.task for v in (await world.detail(idea_id)).tasks if v.task.key == "c")
        await world.runtime.driver.cancel_task(c.id, by="alice", reason="not needed")
        for run in await world.dispatch():
            await world.end(run)
        review = world.run_of("review", await world.detail(idea_id))
        body = json.loads(world.store.payloads[review.id][0])
        assert [t["key"] for t in body["facteur"]["targets"]] == ["a", "b"]


async def test_a_plan_sent_as_json_reaches_the_runs_as_markdown(world: World) -> None:
    idea_id = await world.submit(None)  # planned by a run, until a person sends a plan
    await world.runtime.driver.submit_plan(idea_id, markdown=None, document=plan(("a", [])), source="api")
    detail = await world.detail(idea_id)
    [stored] = detail.plans
    assert stored.markdown.startswith("<!-- codex:plan -->") and "#### a" in stored.markdown
    [run] = await world.dispatch()
    body = json.loads(world.store.payloads[run.id][0])
    assert body["facteur"]["plan"]["markdown"] == stored.markdown


async def test_the_scheduler_is_woken_when_a_slot_frees_not_when_a_run_starts(world: World) -> None:
    await world.submit(plan(("a", []), ("b", ["a"])))
    [run] = await world.dispatch()
    woken: list[str] = []
    world.runtime.driver.wake = lambda: woken.append("wake")
    await world.runtime.run_reports.receive(run.id, parse_report({"id": "s", "type": "started"}))
    assert woken == []  # queued -> running: no slot freed, nothing became ready
    await world.end(run)
    assert woken == ["wake"]
