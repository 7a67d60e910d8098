"""The Store contract for ideas created whole (API, CLI): plan version, approval, tasks with their
dependencies, events, in one transaction; detail and listing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from facteur.bus.port import Message
from facteur.domain.events import NewEvent, verify_chain
from facteur.domain.ideas import IdeaSource, IdeaState
from facteur.domain.tasks import TaskState
from facteur.errors import Conflict, NotFound
from facteur.store.port import (
    ApprovalDraft,
    IdeaCreation,
    IdeaDraft,
    IdeaFilter,
    PlanVersionDraft,
    Store,
    TaskSpec,
)
from tests.support.fakes import FakeClock


def spec(key: str, *deps: str, heavy: bool = False) -> TaskSpec:
    return TaskSpec(
        id=uuid.uuid4(),
        key=key,
        title=f"Task {key}",
        description=f"do {key}",
        depends_on=deps,
        acceptance_criteria=(f"{key} works",),
        paths=(f"src/{key}.py",),
        heavy=heavy,
        state=TaskState.PENDING if deps else TaskState.READY,
    )


def creation(
    clock: FakeClock,
    *,
    ref: str | None = None,
    repository: str = "acme/widgets",
    state: IdeaState = IdeaState.AWAITING_DEPENDENCIES,
    approved: bool = True,
) -> IdeaCreation:
    idea_id = uuid.uuid4()
    return IdeaCreation(
        idea=IdeaDraft(
            id=idea_id,
            source=IdeaSource.API,
            source_ref=ref or f"api:{idea_id}",
            repository=repository,
            title="Faster widgets",
            initiator="alice",
            priority=1,
            spec={"goal": "p99 halved", "risk_labels": ["auth"]},
            state=state,
        ),
        at=clock.now(),
        plan=PlanVersionDraft(source="api", markdown="<!-- codex:plan -->\n…", document={"tasks": []}),
        approval=ApprovalDraft(
            id=uuid.uuid4(),
            plan_version=1,
            decision="automatic",
            decided_by="facteur",
            reason="no approval needed",
        )
        if approved
        else None,
        plan_version=1 if approved else None,
        tasks=[spec("a"), spec("b"), spec("c", "a", "b", heavy=True)] if approved else [],
        events=[NewEvent(kind="idea.registered", actor="test", payload={}, idea_id=idea_id)],
        messages=[Message(topic="codex.intent", key=f"idea-{idea_id}".encode(), value=b"{}")],
    )


async def test_an_idea_is_created_whole(store: Store, clock: FakeClock) -> None:
    made = creation(clock)
    idea = await store.create_idea(made)
    assert (idea.state, idea.plan_version, idea.priority) == (IdeaState.AWAITING_DEPENDENCIES, 1, 1)
    detail = await store.idea_detail(idea.id)
    assert detail.spec == {"goal": "p99 halved", "risk_labels": ["auth"]}
    assert [p.version for p in detail.plans] == [1]
    assert [(a.decision, a.plan_version) for a in detail.approvals] == [("automatic", 1)]
    assert [v.task.key for v in detail.tasks] == ["a", "b", "c"]  # plan order
    views = {v.task.key: v for v in detail.tasks}
    assert views["c"].depends_on == ("a", "b")
    assert views["a"].depends_on == ()
    c = views["c"].task
    assert (c.state, c.heavy, c.acceptance_criteria, c.paths, c.plan_version) == (
        TaskState.PENDING,
        True,
        ("c works",),
        ("src/c.py",),
        1,
    )
    assert views["a"].task.state is TaskState.READY
    assert [e.kind for e in await store.list_events(idea_id=idea.id)] == ["idea.registered"]
    assert [e.message.topic for e in await store.pending_outbox(10)] == ["codex.intent"]
    assert verify_chain(await store.list_events()) is None


async def test_an_idea_waiting_for_approval_has_no_tasks(store: Store, clock: FakeClock) -> None:
    idea = await store.create_idea(creation(clock, state=IdeaState.AWAITING_APPROVAL, approved=False))
    detail = await store.idea_detail(idea.id)
    assert (idea.plan_version, detail.tasks, detail.approvals) == (None, [], [])
    assert [p.version for p in detail.plans] == [1]


async def test_a_second_idea_with_the_same_source_ref_conflicts_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await store.create_idea(creation(clock, ref="api:key-1"))
    with pytest.raises(Conflict, match="api:key-1"):
        await store.create_idea(creation(clock, ref="api:key-1"))
    assert len(await store.list_ideas(IdeaFilter())) == 1
    assert len(await store.list_events()) == 1
    found = await store.find_idea(IdeaSource.API, "api:key-1")
    assert found is not None
    assert await store.find_idea(IdeaSource.API, "api:nope") is None


async def test_ideas_are_listed_newest_first_by_page_and_filter(store: Store, clock: FakeClock) -> None:
    made = []
    for n in range(5):
        repo = "acme/widgets" if n % 2 == 0 else "acme/gadgets"
        state = IdeaState.AWAITING_APPROVAL if n == 4 else IdeaState.AWAITING_DEPENDENCIES
        made.append(await store.create_idea(creation(clock, repository=repo, state=state, approved=n != 4)))
        clock.advance(timedelta(minutes=1).total_seconds())
    first = await store.list_ideas(IdeaFilter(limit=2))
    assert [i.id for i in first] == [made[4].id, made[3].id]
    rest = await store.list_ideas(IdeaFilter(limit=10, before=(first[-1].created_at, first[-1].id)))
    assert [i.id for i in rest] == [made[2].id, made[1].id, made[0].id]
    widgets = await store.list_ideas(IdeaFilter(repository="acme/widgets"))
    assert [i.id for i in widgets] == [made[4].id, made[2].id, made[0].id]
    waiting = await store.list_ideas(IdeaFilter(states=[IdeaState.AWAITING_APPROVAL]))
    assert [i.id for i in waiting] == [made[4].id]
    assert await store.list_ideas(IdeaFilter(source=IdeaSource.DISCORD)) == []


async def test_an_unknown_idea_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.idea_detail(uuid.uuid4())
