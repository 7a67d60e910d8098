"""The Store contract for orchestration: an idea changed as a whole (change_idea), scheduling passes
(claim_tasks, active_runs), and the reconciler's reads and take-overs (stale_claims, unclaimed runs,
unsettled_runs, ideas_to_plan)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

import pytest

from facteur.bus.port import Message
from facteur.domain.events import NewEvent, verify_chain
from facteur.domain.ideas import IdeaSource, IdeaState
from facteur.domain.runs import Run, RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import Task, TaskState
from facteur.errors import NotFound
from facteur.store.port import (
    ActiveRuns,
    ApprovalDraft,
    ClaimCandidate,
    Claimed,
    ClaimLimits,
    ClaimRequest,
    ClaimResult,
    Dependency,
    IdeaChange,
    IdeaCreation,
    IdeaDetail,
    IdeaDraft,
    IngestEffects,
    NewRun,
    PlanVersionDraft,
    ReportOutcome,
    RunReport,
    RunUpdate,
    Store,
    TaskChange,
    TaskSpec,
)
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock

PLAN_MARKDOWN = "<!-- codex:plan -->\n# v1"

# --- setting up ---------------------------------------------------------------------------------------------


def task(
    key: str,
    *deps: str,
    heavy: bool = False,
    state: TaskState | None = None,
    stage: Stage = Stage.IMPLEMENTATION,
) -> TaskSpec:
    return TaskSpec(
        id=uuid.uuid4(),
        key=key,
        title=f"Task {key}",
        description=f"do {key}",
        depends_on=deps,
        acceptance_criteria=(f"{key} works",),
        paths=(f"src/{key}.py",),
        heavy=heavy,
        state=state or (TaskState.PENDING if deps else TaskState.READY),
        stage=stage,
    )


async def an_idea(
    store: Store,
    clock: FakeClock,
    *tasks: TaskSpec,
    state: IdeaState = IdeaState.AWAITING_DEPENDENCIES,
    priority: int = 2,
    repository: str = "acme/widgets",
    source: IdeaSource = IdeaSource.API,
    plan: bool = True,
) -> uuid.UUID:
    """An idea created whole; with tasks, its plan (version 1) is approved and they are its tasks."""
    idea_id = uuid.uuid4()
    await store.create_idea(
        IdeaCreation(
            idea=IdeaDraft(
                id=idea_id,
                source=source,
                source_ref=f"{source.value}:{idea_id}",
                repository=repository,
                title="Faster widgets",
                initiator="alice",
                priority=priority,
                state=state,
            ),
            at=clock.now(),
            plan=PlanVersionDraft(source="api", markdown=PLAN_MARKDOWN, document={"tasks": []})
            if plan
            else None,
            approval=ApprovalDraft(
                id=uuid.uuid4(), plan_version=1, decision="automatic", decided_by="facteur", reason=None
            )
            if tasks
            else None,
            plan_version=1 if tasks else None,
            tasks=tasks,
            events=[NewEvent(kind="idea.registered", actor="test", payload={}, idea_id=idea_id)],
            messages=[Message(topic="codex.intent", key=f"idea-{idea_id}".encode(), value=b"{}")],
        )
    )
    return idea_id


async def tasks_of(store: Store, idea_id: uuid.UUID) -> dict[str, Task]:
    return {view.task.key: view.task for view in (await store.idea_detail(idea_id)).tasks}


async def apply(store: Store, idea_id: uuid.UUID, change: IdeaChange) -> None:
    await store.change_idea(idea_id, lambda _: change)


def a_run(task_id: uuid.UUID, *, executor: str | None = "argo", attempt: int = 1) -> NewRun:
    run_id = uuid.uuid4()
    return NewRun(
        id=run_id,
        task_id=task_id,
        stage=Stage.IMPLEMENTATION,
        delivery_id=f"run-{run_id}",
        executor=executor,
        workflow_name=None,
        namespace=None,
        event_body=f'{{"run":"{run_id}"}}'.encode(),
        raw_event=f"raw {run_id}".encode(),
        attempt=attempt,
    )


async def finish(store: Store, run_id: uuid.UUID, status: RunStatus, at: datetime) -> None:
    assert await store.update_run(run_id, RunUpdate(status=status, finished_at=at), None) is not None


class Builder:
    """A scheduler's ``build``: one run per candidate, an event per claim, and (like the scheduler) the
    idea moved to running_tasks by its first claim."""

    def __init__(self, executors: Mapping[str, str | None] | None = None) -> None:
        self.executors = executors or {}
        self.seen: list[ClaimCandidate] = []
        self.runs: dict[str, NewRun] = {}

    @property
    def keys(self) -> list[str]:
        return [candidate.task.key for candidate in self.seen]

    def __call__(self, candidate: ClaimCandidate) -> Claimed:
        self.seen.append(candidate)
        task, idea = candidate.task, candidate.idea
        run = a_run(task.id, executor=self.executors.get(task.key, "argo"), attempt=task.attempts + 1)
        self.runs[task.key] = run
        events = [
            NewEvent(
                kind="task.claimed",
                actor="scheduler",
                payload={"key": task.key},
                idea_id=idea.id,
                task_id=task.id,
                run_id=run.id,
            )
        ]
        moved = None
        if idea.state is IdeaState.AWAITING_DEPENDENCIES:
            moved = IdeaState.RUNNING_TASKS
            events.insert(0, NewEvent(kind="idea.running", actor="scheduler", payload={}, idea_id=idea.id))
        return Claimed(
            run=run,
            idea_state=moved,
            events=events,
            messages=[Message(topic="codex.tasks", key=f"run-{run.id}".encode(), value=run.event_body)],
        )


async def claim(
    store: Store,
    clock: FakeClock,
    build: Builder,
    *,
    holder: str = "s1",
    until: datetime | None = None,
    max_concurrent: int = 10,
    max_per_repository: int = 10,
    max_heavy: int = 10,
) -> ClaimResult:
    return await store.claim_tasks(
        ClaimRequest(
            holder=holder,
            now=clock.now(),
            until=until or clock.now() + timedelta(minutes=5),
            limits=ClaimLimits(
                max_concurrent=max_concurrent, max_per_repository=max_per_repository, max_heavy=max_heavy
            ),
            build=build,
        )
    )


# --- change_idea --------------------------------------------------------------------------------------------


async def test_a_change_is_applied_whole(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(store, clock, task("a"), task("b", "a"), priority=3)
    before = await tasks_of(store, idea_id)
    clock.advance(60)
    now = clock.now()
    later = now + timedelta(minutes=5)
    run = a_run(before["a"].id)
    c, d, review = task("c", "a", "d"), task("d", heavy=True), task("r", "c", stage=Stage.REVIEW)
    seen: list[IdeaDetail] = []

    def decide(detail: IdeaDetail) -> IdeaChange:
        seen.append(detail)
        return IdeaChange(
            state=IdeaState.RUNNING_TASKS,
            paused=True,
            plan_version=2,
            plan=PlanVersionDraft(source="comment", markdown="# v2", document={"tasks": ["c", "d"]}),
            approval=ApprovalDraft(
                id=uuid.uuid4(), plan_version=2, decision="approved", decided_by="bob", reason="fine"
            ),
            new_tasks=[c, d, review],
            tasks=[
                TaskChange(
                    task_id=before["a"].id,
                    state=TaskState.QUEUED,
                    attempts=3,
                    not_before=later,
                    claimed_by="s1",
                    claim_expires_at=later,
                )
            ],
            runs=[run],
            events=[
                NewEvent(kind="idea.changed", actor="test", payload={"n": 1}, idea_id=idea_id),
                NewEvent(kind="run.created", actor="test", payload={}, idea_id=idea_id, run_id=run.id),
            ],
            messages=[Message(topic="codex.tasks", key=f"run-{run.id}".encode(), value=b"{}")],
        )

    await store.change_idea(idea_id, decide)

    assert len(seen) == 1
    assert (seen[0].idea.id, [v.task.key for v in seen[0].tasks]) == (idea_id, ["a", "b"])
    detail = await store.idea_detail(idea_id)
    idea = detail.idea
    assert (idea.state, idea.paused, idea.plan_version, idea.updated_at) == (
        IdeaState.RUNNING_TASKS,
        True,
        2,
        now,
    )
    assert [(p.version, p.source, p.markdown, p.document) for p in detail.plans] == [
        (1, "api", PLAN_MARKDOWN, {"tasks": []}),
        (2, "comment", "# v2", {"tasks": ["c", "d"]}),
    ]
    assert detail.plans[1].created_at == now
    assert [(a.plan_version, a.decision, a.decided_by, a.reason) for a in detail.approvals] == [
        (1, "automatic", "facteur", None),
        (2, "approved", "bob", "fine"),
    ]
    assert detail.approvals[1].created_at == now

    assert [v.task.key for v in detail.tasks] == ["a", "b", "c", "d", "r"]
    views = {v.task.key: v for v in detail.tasks}
    assert (views["c"].depends_on, views["d"].depends_on, views["r"].depends_on) == (("a", "d"), (), ("c",))
    made = {key: views[key].task for key in ("c", "d", "r")}
    assert [
        (t.id, t.state, t.stage, t.plan_version, t.priority, t.position, t.attempts, t.heavy, t.created_at)
        for t in made.values()
    ] == [
        (c.id, TaskState.PENDING, "implementation", 2, 3, 0, 0, False, now),
        (d.id, TaskState.READY, "implementation", 2, 3, 1, 0, True, now),
        (review.id, TaskState.PENDING, "review", None, 3, 2, 0, False, now),
    ]
    assert (made["c"].description, made["c"].acceptance_criteria, made["c"].paths) == (
        "do c",
        ("c works",),
        ("src/c.py",),
    )
    a = views["a"].task
    assert (a.state, a.attempts, a.not_before, a.claimed_by, a.claim_expires_at, a.updated_at) == (
        TaskState.QUEUED,
        3,
        later,
        "s1",
        later,
        now,
    )
    assert views["b"].task == before["b"]

    assert [(r.id, r.task_id, r.status, r.executor, r.attempt, r.created_at) for r in detail.runs] == [
        (run.id, before["a"].id, RunStatus.QUEUED, "argo", 1, now)
    ]
    assert await store.get_run(run.id) == detail.runs[0]
    assert await store.run_payload(run.id) == (run.event_body, run.raw_event)

    events = await store.list_events(idea_id=idea_id)
    assert [(e.kind, e.created_at) for e in events[1:]] == [("idea.changed", now), ("run.created", now)]
    assert events[1].payload == {"n": 1}
    assert [e.kind for e in await store.list_events(run_id=run.id)] == ["run.created"]
    assert verify_chain(await store.list_events()) is None
    pending = await store.pending_outbox(10)
    assert [(e.message.topic, e.message.key) for e in pending] == [
        ("codex.intent", f"idea-{idea_id}".encode()),
        ("codex.tasks", f"run-{run.id}".encode()),
    ]


async def test_plan_versions_are_numbered_after_the_idea_s_own(store: Store, clock: FakeClock) -> None:
    unplanned = await an_idea(store, clock, state=IdeaState.PLANNING, plan=False)
    planned = await an_idea(store, clock, state=IdeaState.AWAITING_APPROVAL)
    for n in (1, 2):
        draft = PlanVersionDraft(source="run", markdown=f"# {n}", document={"n": n})
        await apply(store, unplanned, IdeaChange(plan=draft))
        await apply(store, planned, IdeaChange(plan=draft))
    assert [(p.version, p.markdown) for p in await store.list_plans(unplanned)] == [(1, "# 1"), (2, "# 2")]
    assert [(p.version, p.markdown) for p in await store.list_plans(planned)] == [
        (1, PLAN_MARKDOWN),
        (2, "# 1"),
        (3, "# 2"),
    ]
    # storing a plan approves nothing
    assert (await store.get_idea(planned)).plan_version is None


async def test_new_tasks_take_the_approved_plan_version_when_the_change_names_none(
    store: Store, clock: FakeClock
) -> None:
    idea_id = await an_idea(store, clock, task("a"), priority=1)
    clock.advance(1)
    await apply(store, idea_id, IdeaChange(new_tasks=[task("b", "a"), task("p", stage=Stage.PLANNING)]))
    tasks = await tasks_of(store, idea_id)
    assert [(t.plan_version, t.priority, t.stage) for t in tasks.values()] == [
        (1, 1, "implementation"),
        (1, 1, "implementation"),
        (None, 1, "planning"),
    ]
    assert (await store.idea_detail(idea_id)).tasks[1].depends_on == ("a",)


async def test_a_task_change_sets_back_off_and_claim_as_given(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(store, clock, task("a"))
    a = (await tasks_of(store, idea_id))["a"]
    later = clock.now() + timedelta(minutes=5)
    await apply(
        store,
        idea_id,
        IdeaChange(
            tasks=[
                TaskChange(
                    task_id=a.id,
                    state=TaskState.QUEUED,
                    attempts=2,
                    not_before=later,
                    claimed_by="s1",
                    claim_expires_at=later,
                )
            ]
        ),
    )
    clock.advance(1)
    await apply(store, idea_id, IdeaChange(tasks=[TaskChange(task_id=a.id, state=TaskState.READY)]))
    after = await store.get_task(a.id)
    assert (after.state, after.attempts, after.not_before, after.claimed_by, after.claim_expires_at) == (
        TaskState.READY,
        2,  # None keeps the count
        None,
        None,
        None,
    )
    assert after.updated_at == clock.now()


async def test_run_updates_apply_only_from_expected_statuses(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(store, clock, task("a"), task("b"), task("c"))
    tasks = await tasks_of(store, idea_id)
    submitted, held, lost = a_run(tasks["a"].id), a_run(tasks["b"].id), a_run(tasks["c"].id)
    await apply(store, idea_id, IdeaChange(runs=[submitted, held, lost]))
    clock.advance(10)
    now = clock.now()
    await apply(
        store,
        idea_id,
        IdeaChange(
            run_updates=[
                (
                    submitted.id,
                    RunUpdate(
                        status=RunStatus.SUBMITTED,
                        expected=[RunStatus.QUEUED],
                        workflow_name="wf-a",
                        namespace="ns",
                        submitted_at=now,
                    ),
                ),
                (
                    held.id,
                    RunUpdate(
                        status=RunStatus.CANCELLED, expected=[RunStatus.RUNNING], finished_at=now, detail="no"
                    ),
                ),
                (lost.id, RunUpdate(status=RunStatus.LOST, finished_at=now, detail="gone")),
            ]
        ),
    )
    first = await store.get_run(submitted.id)
    assert (first.status, first.workflow_name, first.namespace, first.submitted_at) == (
        RunStatus.SUBMITTED,
        "wf-a",
        "ns",
        now,
    )
    second = await store.get_run(held.id)
    assert (second.status, second.finished_at, second.detail) == (RunStatus.QUEUED, None, None)
    third = await store.get_run(lost.id)
    assert (third.status, third.finished_at, third.detail) == (RunStatus.LOST, now, "gone")


async def _snapshot(store: Store, idea_id: uuid.UUID) -> tuple[object, ...]:
    return (
        await store.idea_detail(idea_id),
        await store.list_events(),
        await store.pending_outbox(100),
    )


async def test_a_failing_decision_writes_nothing(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(store, clock, task("a"))
    before = await _snapshot(store, idea_id)
    clock.advance(60)

    def decide(detail: IdeaDetail) -> IdeaChange:
        raise RuntimeError(f"no decision for {detail.idea.id}")

    with pytest.raises(RuntimeError, match="no decision"):
        await store.change_idea(idea_id, decide)
    assert await _snapshot(store, idea_id) == before


async def test_a_change_that_cannot_be_applied_writes_nothing(store: Store, clock: FakeClock) -> None:
    """A change fails as a whole: the plan, the idea's move and the approval written before the bad
    dependency are not kept."""
    idea_id = await an_idea(store, clock, task("a"))
    before = await _snapshot(store, idea_id)
    clock.advance(60)
    change = IdeaChange(
        state=IdeaState.RUNNING_TASKS,
        plan_version=2,
        plan=PlanVersionDraft(source="api", markdown="# v2", document={}),
        approval=ApprovalDraft(
            id=uuid.uuid4(), plan_version=2, decision="approved", decided_by="bob", reason=None
        ),
        new_tasks=[task("b", "no-such-task")],
        events=[NewEvent(kind="idea.changed", actor="test", payload={}, idea_id=idea_id)],
    )
    with pytest.raises(KeyError):
        await apply(store, idea_id, change)
    assert await _snapshot(store, idea_id) == before


async def test_an_empty_change_writes_nothing(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(store, clock, task("a"))
    before = await _snapshot(store, idea_id)
    clock.advance(60)
    returned = await store.change_idea(idea_id, lambda _: IdeaChange())
    assert returned.empty
    assert await _snapshot(store, idea_id) == before


async def test_changing_an_unknown_idea_is_not_found(store: Store, clock: FakeClock) -> None:
    await an_idea(store, clock, task("a"))
    events = await store.list_events()
    calls: list[IdeaDetail] = []

    def decide(detail: IdeaDetail) -> IdeaChange:
        calls.append(detail)
        return IdeaChange(state=IdeaState.CANCELLED)

    with pytest.raises(NotFound):
        await store.change_idea(uuid.uuid4(), decide)
    assert calls == []
    assert await store.list_events() == events


# --- claim_tasks and active_runs ----------------------------------------------------------------------------


async def test_ready_tasks_are_claimed_by_priority_then_age_then_plan_order(
    store: Store, clock: FakeClock
) -> None:
    await an_idea(store, clock, task("x0"), task("x1"), task("x2", "x0"), repository="acme/x")
    clock.advance(1)
    await an_idea(store, clock, task("y0"), priority=1, repository="acme/y")
    clock.advance(1)
    await an_idea(store, clock, task("z0"), repository="acme/z")
    clock.advance(1)
    until = clock.now() + timedelta(minutes=10)
    build = Builder()

    result = await claim(store, clock, build, until=until)

    assert build.keys == ["y0", "x0", "x1", "z0"]  # x2 waits for x0
    assert not result.saturated
    assert [c.run.task_id for c in result.claimed] == [candidate.task.id for candidate in build.seen]
    for claimed, candidate in zip(result.claimed, build.seen, strict=True):
        after = await store.get_task(candidate.task.id)
        assert (after.state, after.attempts, after.claimed_by, after.claim_expires_at, after.updated_at) == (
            TaskState.QUEUED,
            1,
            "s1",
            until,
            clock.now(),
        )
        sent = build.runs[candidate.task.key]
        assert (claimed.run.id, claimed.run.status, claimed.run.created_at, claimed.run.attempt) == (
            sent.id,
            RunStatus.QUEUED,
            clock.now(),
            1,
        )
        assert claimed.run.idea_id == candidate.idea.id
        assert await store.get_run(claimed.run.id) == claimed.run
        assert (claimed.event_body, claimed.raw_event) == (sent.event_body, sent.raw_event)
        assert await store.run_payload(claimed.run.id) == (sent.event_body, sent.raw_event)
    assert await store.active_runs() == ActiveRuns(
        total=4, by_repository={"acme/x": 2, "acme/y": 1, "acme/z": 1}, heavy=0
    )
    # nothing left to claim
    again = Builder()
    assert await claim(store, clock, again) == ClaimResult(claimed=[], saturated=False)
    assert again.seen == []


async def test_back_off_paused_and_unscheduled_ideas_are_passed_over(store: Store, clock: FakeClock) -> None:
    waiting = await an_idea(store, clock, task("w0"), task("w1"), task("w2"))
    clock.advance(1)
    paused = await an_idea(store, clock, task("p0"))
    clock.advance(1)
    await an_idea(store, clock, task("r0"), state=IdeaState.RUNNING_TASKS)
    clock.advance(1)
    await an_idea(store, clock, task("a0"), state=IdeaState.AWAITING_APPROVAL)
    await an_idea(store, clock, task("q0"), state=IdeaState.QA_REVIEW)
    await an_idea(store, clock, task("g0"), state=IdeaState.REGISTERED)
    clock.advance(1)
    w = await tasks_of(store, waiting)
    back_off = clock.now() + timedelta(seconds=30)
    await apply(
        store,
        waiting,
        IdeaChange(
            tasks=[
                TaskChange(task_id=w["w0"].id, state=TaskState.READY, not_before=back_off),
                TaskChange(task_id=w["w1"].id, state=TaskState.READY, not_before=clock.now()),
            ]
        ),
    )
    await apply(store, paused, IdeaChange(paused=True))

    build = Builder()
    result = await claim(store, clock, build)
    assert build.keys == ["w1", "w2", "r0"]
    assert not result.saturated
    assert (await store.get_task(w["w0"].id)).state is TaskState.READY

    clock.advance(30)
    later = Builder()
    await claim(store, clock, later)
    assert later.keys == ["w0"]

    await apply(store, paused, IdeaChange(paused=False))
    unpaused = Builder()
    await claim(store, clock, unpaused)
    assert unpaused.keys == ["p0"]


async def test_max_concurrent_counts_plan_tasks_already_active(store: Store, clock: FakeClock) -> None:
    # a GitHub issue's planning run: its task is queued but belongs to no plan, so it is not counted
    await store.ingest(make_ingest(clock))
    busy = await an_idea(store, clock, task("b0", heavy=True), task("b1"))
    clock.advance(1)
    await an_idea(store, clock, task("r0"), task("r1"), repository="acme/gadgets")
    clock.advance(1)
    b0 = (await tasks_of(store, busy))["b0"]
    await apply(store, busy, IdeaChange(tasks=[TaskChange(task_id=b0.id, state=TaskState.RUNNING)]))
    assert await store.active_runs() == ActiveRuns(total=1, by_repository={"acme/widgets": 1}, heavy=1)

    build = Builder()
    result = await claim(store, clock, build, max_concurrent=3)
    assert build.keys == ["b1", "r0"]
    assert result.saturated  # r1 is left behind
    assert await store.active_runs() == ActiveRuns(
        total=3, by_repository={"acme/widgets": 2, "acme/gadgets": 1}, heavy=1
    )
    # no slot left: nothing is claimed, and the ready task left behind says so
    full = Builder()
    assert await claim(store, clock, full, max_concurrent=3) == ClaimResult(claimed=[], saturated=True)
    assert full.seen == []


async def test_a_full_pass_with_nothing_left_is_not_saturated(store: Store, clock: FakeClock) -> None:
    await an_idea(store, clock, task("a"), task("b"), task("c", "a"))
    result = await claim(store, clock, Builder(), max_concurrent=2)
    assert (len(result.claimed), result.saturated) == (2, False)


async def test_repository_and_heavy_limits_pass_over_tasks_without_stopping(
    store: Store, clock: FakeClock
) -> None:
    await an_idea(
        store,
        clock,
        task("h1", heavy=True),
        task("h2", heavy=True),
        task("l1"),
        task("l2"),
        priority=1,
        repository="acme/a",
    )
    clock.advance(1)
    await an_idea(store, clock, task("b1"), task("b2", heavy=True), repository="acme/b")
    build = Builder()
    result = await claim(store, clock, build, max_per_repository=2, max_heavy=1)
    # h2 and b2 are over the heavy limit, l2 over acme/a's: the light tasks after them are still claimed
    assert build.keys == ["h1", "l1", "b1"]
    assert result.saturated
    assert await store.active_runs() == ActiveRuns(total=3, by_repository={"acme/a": 2, "acme/b": 1}, heavy=1)


async def test_tasks_held_back_by_a_limit_do_not_hide_later_ones(store: Store, clock: FakeClock) -> None:
    """More tasks held back than one page of candidates: the pass reads on to the next repository's."""
    await an_idea(store, clock, *(task(f"a{n:02}") for n in range(40)), priority=1, repository="acme/a")
    clock.advance(1)
    await an_idea(store, clock, task("b0"), repository="acme/b")
    build = Builder()
    result = await claim(store, clock, build, max_concurrent=2, max_per_repository=1)
    assert build.keys == ["a00", "b0"]
    assert result.saturated


async def test_the_first_claim_moves_the_idea_and_the_next_sees_it(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(store, clock, task("a"), task("b"))
    clock.advance(30)
    build = Builder()
    result = await claim(store, clock, build)

    assert [(c.idea.id, c.idea.state) for c in build.seen] == [
        (idea_id, IdeaState.AWAITING_DEPENDENCIES),
        (idea_id, IdeaState.RUNNING_TASKS),
    ]
    idea = await store.get_idea(idea_id)
    assert (idea.state, idea.updated_at) == (IdeaState.RUNNING_TASKS, clock.now())
    events = await store.list_events(idea_id=idea_id)
    assert [e.kind for e in events] == ["idea.registered", "idea.running", "task.claimed", "task.claimed"]
    assert [e.run_id for e in events if e.kind == "task.claimed"] == [c.run.id for c in result.claimed]
    assert all(e.created_at == clock.now() for e in events[1:])
    assert verify_chain(await store.list_events()) is None
    pending = await store.pending_outbox(10)
    assert [e.message.key for e in pending] == [
        f"idea-{idea_id}".encode(),
        *(f"run-{c.run.id}".encode() for c in result.claimed),
    ]


async def test_a_candidate_carries_its_dependencies_and_the_approved_plan(
    store: Store, clock: FakeClock
) -> None:
    idea_id = await an_idea(store, clock, task("a"), task("b"), task("c", "b", "a"))
    first = Builder()
    await claim(store, clock, first)
    assert [c.plan_markdown for c in first.seen] == [PLAN_MARKDOWN, PLAN_MARKDOWN]
    assert [c.dependencies for c in first.seen] == [(), ()]
    done = first.runs["a"].id

    def effects(_: ReportOutcome) -> IngestEffects:
        return IngestEffects(response={}, events=[])

    for key, status in (("start", RunStatus.RUNNING), ("end", RunStatus.SUCCEEDED)):
        clock.advance(1)
        await store.report_run(
            RunReport(
                run_id=done,
                key=key,
                received_at=clock.now(),
                status=status,
                summary="did a",
                branch="codex/a",
                effects=effects,
            )
        )
    tasks = await tasks_of(store, idea_id)
    await apply(
        store,
        idea_id,
        IdeaChange(
            tasks=[
                TaskChange(task_id=tasks["a"].id, state=TaskState.SUCCEEDED),
                TaskChange(task_id=tasks["c"].id, state=TaskState.READY),
            ]
        ),
    )
    second = Builder()
    await claim(store, clock, second)
    assert second.keys == ["c"]
    (candidate,) = second.seen
    assert candidate.plan_markdown == PLAN_MARKDOWN
    assert candidate.dependencies == (
        Dependency(key="a", title="Task a", state=TaskState.SUCCEEDED, branch="codex/a", summary="did a"),
        Dependency(key="b", title="Task b", state=TaskState.QUEUED, branch=None, summary=None),
    )


async def test_a_failing_build_writes_nothing(store: Store, clock: FakeClock) -> None:
    """A pass is one transaction: the claims made before ``build`` failed are not kept either."""
    idea_id = await an_idea(store, clock, task("a"), task("b"))
    before = await _snapshot(store, idea_id)
    clock.advance(60)
    build = Builder()

    def failing(candidate: ClaimCandidate) -> Claimed:
        if candidate.task.key == "b":
            raise RuntimeError("cannot build b")
        return build(candidate)

    with pytest.raises(RuntimeError, match="cannot build b"):
        await store.claim_tasks(
            ClaimRequest(
                holder="s1",
                now=clock.now(),
                until=clock.now() + timedelta(minutes=5),
                limits=ClaimLimits(max_concurrent=10, max_per_repository=10, max_heavy=10),
                build=failing,
            )
        )
    assert await _snapshot(store, idea_id) == before
    assert await store.active_runs() == ActiveRuns()


async def test_concurrent_passes_share_the_limits(store: Store, clock: FakeClock) -> None:
    await an_idea(store, clock, *(task(f"t{n}") for n in range(6)))
    builds = [Builder() for _ in range(4)]
    results = await asyncio.gather(
        *(claim(store, clock, build, holder=f"s{n}", max_concurrent=3) for n, build in enumerate(builds))
    )
    claimed = [c.run.task_id for result in results for c in result.claimed]
    assert len(claimed) == len(set(claimed)) == 3
    assert (await store.active_runs()).total == 3


# --- stale_claims and unclaimed runs ------------------------------------------------------------------------


async def test_expired_claims_of_unsubmitted_runs_are_taken_over(store: Store, clock: FakeClock) -> None:
    idea_id = await an_idea(
        store, clock, task("expired"), task("submitted"), task("local"), task("running"), task("live")
    )
    expiry = clock.now() + timedelta(minutes=1)
    build = Builder({"local": None})
    await claim(store, clock, build, until=expiry, max_concurrent=4)
    await claim(store, clock, build, until=expiry + timedelta(minutes=10))
    assert build.keys == ["expired", "submitted", "local", "running", "live"]
    runs = build.runs
    tasks = await tasks_of(store, idea_id)
    await store.update_run(
        runs["submitted"].id,
        RunUpdate(status=RunStatus.SUBMITTED, expected=[RunStatus.QUEUED], submitted_at=clock.now()),
        None,
    )
    await apply(
        store,
        idea_id,
        IdeaChange(
            tasks=[
                TaskChange(
                    task_id=tasks["running"].id,
                    state=TaskState.RUNNING,
                    claimed_by="s1",
                    claim_expires_at=expiry,
                )
            ]
        ),
    )
    clock.advance(60)  # now == expiry: a claim that ends now has expired
    until = clock.now() + timedelta(minutes=5)

    taken = await store.stale_claims("s2", now=clock.now(), until=until, limit=10)

    assert [(r.id, r.status, r.executor) for r in taken] == [(runs["expired"].id, RunStatus.QUEUED, "argo")]
    after = await tasks_of(store, idea_id)
    assert [(key, t.state, t.claimed_by, t.claim_expires_at) for key, t in after.items()] == [
        ("expired", TaskState.QUEUED, "s2", until),
        ("submitted", TaskState.QUEUED, "s1", expiry),
        ("local", TaskState.QUEUED, "s1", expiry),
        ("running", TaskState.RUNNING, "s1", expiry),
        ("live", TaskState.QUEUED, "s1", expiry + timedelta(minutes=10)),
    ]
    # the new claim is live: nobody takes it over
    assert await store.stale_claims("s3", now=clock.now(), until=until, limit=10) == []


async def test_stale_claims_are_taken_a_limited_number_at_a_time(store: Store, clock: FakeClock) -> None:
    await an_idea(store, clock, task("a"), task("b"), task("c"))
    build = Builder()
    await claim(store, clock, build, until=clock.now())
    first = await store.stale_claims("s2", now=clock.now(), until=clock.now() + timedelta(minutes=1), limit=2)
    second = await store.stale_claims(
        "s3", now=clock.now(), until=clock.now() + timedelta(minutes=1), limit=2
    )
    assert len(first) == 2 and len(second) == 1
    assert {r.id for r in first + second} == {run.id for run in build.runs.values()}
    holders = [(await store.get_task(run.task_id)).claimed_by for run in first + second]
    assert holders == ["s2", "s2", "s3"]


async def test_unclaimed_runs_leave_out_the_runs_of_claimed_tasks(store: Store, clock: FakeClock) -> None:
    ingested = await store.ingest(make_ingest(clock))
    assert ingested.ids is not None
    clock.advance(1)
    idea_id = await an_idea(store, clock, task("a"), task("b"))
    build = Builder()
    await claim(store, clock, build, max_concurrent=1)
    tasks = await tasks_of(store, idea_id)
    clock.advance(1)
    manual = a_run(tasks["b"].id)
    await apply(store, idea_id, IdeaChange(runs=[manual]))

    every = [ingested.ids.run_id, build.runs["a"].id, manual.id]
    assert [r.id for r in await store.list_runs()] == every
    assert [r.id for r in await store.list_runs(unclaimed_only=True)] == [ingested.ids.run_id, manual.id]
    assert [r.id for r in await store.list_runs(unclaimed_only=True, dispatched_only=True, limit=1)] == [
        ingested.ids.run_id
    ]
    # a released claim puts the run back
    await apply(store, idea_id, IdeaChange(tasks=[TaskChange(task_id=tasks["a"].id, state=TaskState.READY)]))
    assert [r.id for r in await store.list_runs(unclaimed_only=True)] == every


# --- unsettled_runs -----------------------------------------------------------------------------------------


async def test_finished_latest_runs_of_active_plan_tasks_are_unsettled(
    store: Store, clock: FakeClock
) -> None:
    idea_id = await an_idea(store, clock, task("done"), task("busy"), task("retried"), task("settled"))
    build = Builder()
    await claim(store, clock, build)
    runs = build.runs
    tasks = await tasks_of(store, idea_id)
    clock.advance(10)
    for key, status in (
        ("done", RunStatus.SUCCEEDED),
        ("retried", RunStatus.FAILED),
        ("settled", RunStatus.FAILED),
    ):
        await finish(store, runs[key].id, status, clock.now())
    retry = a_run(tasks["retried"].id, attempt=2)
    await apply(
        store,
        idea_id,
        IdeaChange(
            tasks=[
                TaskChange(task_id=tasks["done"].id, state=TaskState.RUNNING),
                TaskChange(task_id=tasks["settled"].id, state=TaskState.FAILED),
            ],
            runs=[retry],
        ),
    )
    # busy: still queued; retried: its first attempt failed but the second has not ended; settled: reacted to
    assert [r.id for r in await store.unsettled_runs(10)] == [runs["done"].id]

    clock.advance(10)
    await finish(store, retry.id, RunStatus.TIMED_OUT, clock.now())
    unsettled = await store.unsettled_runs(10)
    assert [(r.id, r.status, r.attempt) for r in unsettled] == [
        (runs["done"].id, RunStatus.SUCCEEDED, 1),
        (retry.id, RunStatus.TIMED_OUT, 2),
    ]
    assert [r.id for r in await store.unsettled_runs(1)] == [runs["done"].id]


async def test_a_planning_run_is_unsettled_while_its_idea_is_planning(store: Store, clock: FakeClock) -> None:
    ingested = await store.ingest(make_ingest(clock))
    assert ingested.ids is not None
    idea_id, run_id = ingested.ids.idea_id, ingested.ids.run_id
    clock.advance(5)
    await finish(store, run_id, RunStatus.SUCCEEDED, clock.now())
    # its task belongs to no plan: only an idea still planning makes its end unsettled
    assert await store.unsettled_runs(10) == []
    await apply(store, idea_id, IdeaChange(state=IdeaState.PLANNING))
    unsettled: list[Run] = await store.unsettled_runs(10)
    assert [r.id for r in unsettled] == [run_id]
    await apply(store, idea_id, IdeaChange(state=IdeaState.AWAITING_APPROVAL))
    assert await store.unsettled_runs(10) == []


# --- ideas_to_plan ------------------------------------------------------------------------------------------


async def test_registered_ideas_without_tasks_are_to_plan(store: Store, clock: FakeClock) -> None:
    wanted = []
    for source in (IdeaSource.API, IdeaSource.CLI):
        wanted.append(await an_idea(store, clock, state=IdeaState.REGISTERED, source=source, plan=False))
        clock.advance(1)
    # registered but with tasks, or past registration
    await an_idea(store, clock, task("a"), state=IdeaState.REGISTERED)
    await an_idea(store, clock, state=IdeaState.PLANNING, plan=False)
    await an_idea(store, clock, state=IdeaState.CANCELLED, plan=False)
    assert await store.ideas_to_plan(10) == wanted
    assert await store.ideas_to_plan(2) == wanted[:2]


async def test_ideas_of_other_sources_are_not_planned_by_the_orchestrator(
    store: Store, clock: FakeClock
) -> None:
    """GitHub issues are planned by the GitHub intake; a Discord /plan names no repository
    (domain.ideas.PLANNED_SOURCES)."""
    await an_idea(store, clock, state=IdeaState.REGISTERED, source=IdeaSource.GITHUB_ISSUE, plan=False)
    clock.advance(1)
    await an_idea(store, clock, state=IdeaState.REGISTERED, source=IdeaSource.DISCORD, plan=False)
    clock.advance(1)
    await an_idea(store, clock, state=IdeaState.REGISTERED, source=IdeaSource.INCIDENT, plan=False)
    clock.advance(1)
    api = await an_idea(store, clock, state=IdeaState.REGISTERED, plan=False)
    assert await store.ideas_to_plan(10) == [api]
