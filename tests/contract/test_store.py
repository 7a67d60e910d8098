"""The Store contract: every adapter (memory, SQLite, PostgreSQL) behaves the same."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from facteur.domain.events import NewEvent, verify_chain
from facteur.domain.ideas import IdeaSource, IdeaState
from facteur.domain.runs import RunStatus
from facteur.domain.stages import Stage
from facteur.domain.tasks import TaskState
from facteur.errors import NotFound, StoreError
from facteur.store.migrate import head_revision
from facteur.store.port import (
    IdeaDraft,
    Ingest,
    IngestEffects,
    IngestIds,
    IngestResult,
    RunDraft,
    RunUpdate,
    Store,
    TaskDraft,
)
from tests.support.fakes import FakeClock


def make_ingest(
    clock: FakeClock,
    *,
    delivery_id: str = "delivery-1",
    source_ref: str = "acme/widgets#7",
    task_key: str = "planning",
    executor: str | None = "none",
) -> Ingest:
    run_id = uuid.uuid4()

    def effects(ids: IngestIds) -> IngestEffects:
        return IngestEffects(
            response={"ideaId": str(ids.idea_id), "taskId": str(ids.task_id), "runId": str(ids.run_id)},
            events=[
                NewEvent(
                    kind="test.ingested",
                    actor="test",
                    payload={"delivery_id": delivery_id, "created": ids.idea_created},
                    idea_id=ids.idea_id,
                    task_id=ids.task_id,
                    run_id=ids.run_id,
                )
            ],
        )

    return Ingest(
        source="codex_task",
        delivery_id=delivery_id,
        received_at=clock.now(),
        idea=IdeaDraft(
            id=uuid.uuid4(),
            source=IdeaSource.GITHUB_ISSUE,
            source_ref=source_ref,
            repository=source_ref.split("#", maxsplit=1)[0],
            title="Make widgets faster",
            initiator="octocat",
        ),
        task=TaskDraft(
            id=uuid.uuid4(), key=task_key, title="Plan it", stage=Stage.PLANNING, state=TaskState.QUEUED
        ),
        run=RunDraft(
            id=run_id,
            stage=Stage.PLANNING,
            delivery_id=delivery_id,
            status=RunStatus.QUEUED,
            executor=executor,
            workflow_name=f"codex-planning-x-{run_id.hex[:8]}" if executor else None,
            namespace="ns" if executor else None,
            event_body=b'{"stage":"planning"}',
            raw_event=b"\x08\x01",
        ),
        effects=effects,
    )


async def test_schema_is_at_head(store: Store) -> None:
    await store.ping()
    assert await store.schema_revision() == head_revision()


async def test_ingest_records_idea_task_run_delivery_and_event(store: Store, clock: FakeClock) -> None:
    ingest = make_ingest(clock)
    result = await store.ingest(ingest)

    assert not result.duplicate
    assert result.ids is not None
    ids = result.ids
    assert ids.idea_created
    assert ids.run_id == ingest.run.id
    assert result.response == {
        "ideaId": str(ids.idea_id),
        "taskId": str(ids.task_id),
        "runId": str(ids.run_id),
    }

    idea = await store.get_idea(ids.idea_id)
    assert (idea.source, idea.source_ref, idea.state, idea.paused) == (
        IdeaSource.GITHUB_ISSUE,
        "acme/widgets#7",
        IdeaState.REGISTERED,
        False,
    )
    assert idea.created_at == clock.now()
    task = await store.get_task(ids.task_id)
    assert (task.idea_id, task.key, task.state) == (ids.idea_id, "planning", TaskState.QUEUED)
    run = await store.get_run(ids.run_id)
    assert (run.task_id, run.status, run.executor, run.delivery_id) == (
        ids.task_id,
        RunStatus.QUEUED,
        "none",
        "delivery-1",
    )
    assert await store.run_payload(run.id) == (b'{"stage":"planning"}', b"\x08\x01")
    assert await store.find_delivery("codex_task", "delivery-1") == result.response
    assert await store.find_delivery("codex_task", "other") is None
    assert await store.find_delivery("github", "delivery-1") is None

    events = await store.list_events()
    assert [(e.seq, e.kind, e.run_id) for e in events] == [(1, "test.ingested", run.id)]
    assert events[0].payload == {"delivery_id": "delivery-1", "created": True}


async def test_replayed_delivery_writes_nothing_and_returns_first_answer(
    store: Store, clock: FakeClock
) -> None:
    first = await store.ingest(make_ingest(clock))
    clock.advance(5)
    again = await store.ingest(make_ingest(clock))

    assert again.duplicate
    assert again.ids is None
    assert again.response == first.response
    assert len(await store.list_runs()) == 1
    assert len(await store.list_events()) == 1


async def test_second_delivery_for_same_issue_reuses_idea_and_task(store: Store, clock: FakeClock) -> None:
    first = await store.ingest(make_ingest(clock, delivery_id="d-1"))
    second = await store.ingest(make_ingest(clock, delivery_id="d-2"))
    other_task = await store.ingest(make_ingest(clock, delivery_id="d-3", task_key="review"))
    assert first.ids and second.ids and other_task.ids
    assert second.ids.idea_id == first.ids.idea_id
    assert not second.ids.idea_created
    assert second.ids.task_id == first.ids.task_id
    assert second.ids.run_id != first.ids.run_id
    assert other_task.ids.task_id != first.ids.task_id
    assert len(await store.list_runs()) == 3


async def test_concurrent_identical_deliveries_record_one_run(store: Store, clock: FakeClock) -> None:
    results = await asyncio.gather(*(store.ingest(make_ingest(clock)) for _ in range(12)))
    originals = [r for r in results if not r.duplicate]
    assert len(originals) == 1
    assert all(r.response == originals[0].response for r in results)
    assert len(await store.list_runs()) == 1


async def test_concurrent_deliveries_for_one_new_issue_share_the_idea(store: Store, clock: FakeClock) -> None:
    results = await asyncio.gather(
        *(store.ingest(make_ingest(clock, delivery_id=f"d-{n}")) for n in range(8))
    )
    assert all(not r.duplicate for r in results)
    idea_ids = {r.ids.idea_id for r in results if r.ids}
    assert len(idea_ids) == 1
    assert sum(1 for r in results if r.ids and r.ids.idea_created) == 1


async def test_failed_effects_leave_nothing_behind(store: Store, clock: FakeClock) -> None:
    ingest = make_ingest(clock)

    def broken(_ids: IngestIds) -> IngestEffects:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.ingest(Ingest(**{**_fields(ingest), "effects": broken}))
    assert await store.find_delivery("codex_task", ingest.delivery_id) is None
    assert await store.list_runs() == []
    assert await store.list_events() == []
    # the delivery can still be accepted afterwards
    assert not (await store.ingest(ingest)).duplicate


async def test_a_run_delivery_id_recorded_under_another_source_is_a_store_error(
    store: Store, clock: FakeClock
) -> None:
    await store.ingest(make_ingest(clock, delivery_id="shared"))
    clashing = Ingest(**{**_fields(make_ingest(clock, delivery_id="shared")), "source": "github"})
    others = [make_ingest(clock, delivery_id=f"other-{n}") for n in range(3)]
    outcomes = await asyncio.gather(
        store.ingest(clashing), *(store.ingest(i) for i in others), return_exceptions=True
    )
    assert isinstance(outcomes[0], StoreError), outcomes[0]
    assert all(isinstance(o, IngestResult) and not o.duplicate for o in outcomes[1:])
    assert await store.find_delivery("github", "shared") is None


def _fields(ingest: Ingest) -> dict[str, Any]:
    return {name: getattr(ingest, name) for name in Ingest.__dataclass_fields__}


async def test_update_run_respects_expected_status(store: Store, clock: FakeClock) -> None:
    result = await store.ingest(make_ingest(clock))
    assert result.ids
    run_id = result.ids.run_id
    clock.advance(1)
    submitted = await store.update_run(
        run_id,
        RunUpdate(status=RunStatus.SUBMITTED, expected=(RunStatus.QUEUED,), submitted_at=clock.now()),
        NewEvent(kind="run.submitted", actor="test", payload={}, run_id=run_id),
    )
    assert submitted is not None
    assert submitted.status is RunStatus.SUBMITTED
    assert submitted.submitted_at == clock.now()
    assert submitted.workflow_name is not None  # untouched fields keep their values

    stale = await store.update_run(
        run_id,
        RunUpdate(status=RunStatus.SUBMITTED, expected=(RunStatus.QUEUED,)),
        NewEvent(kind="run.submitted", actor="test", payload={}, run_id=run_id),
    )
    assert stale is None
    assert [e.kind for e in await store.list_events(run_id=run_id)] == ["test.ingested", "run.submitted"]

    with pytest.raises(NotFound, match="run"):
        await store.update_run(uuid.uuid4(), RunUpdate(status=RunStatus.FAILED), None)


async def test_unknown_ids_raise_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_idea(uuid.uuid4())
    with pytest.raises(NotFound):
        await store.get_task(uuid.uuid4())
    with pytest.raises(NotFound):
        await store.get_run(uuid.uuid4())
    with pytest.raises(NotFound):
        await store.run_payload(uuid.uuid4())


async def test_list_runs_filters_and_orders(store: Store, clock: FakeClock) -> None:
    a = await store.ingest(make_ingest(clock, delivery_id="a"))
    clock.advance(1)
    b = await store.ingest(make_ingest(clock, delivery_id="b", executor=None))
    clock.advance(1)
    c = await store.ingest(make_ingest(clock, delivery_id="c"))
    assert a.ids and b.ids and c.ids
    await store.update_run(c.ids.run_id, RunUpdate(status=RunStatus.RUNNING), None)

    assert [r.delivery_id for r in await store.list_runs()] == ["a", "b", "c"]
    queued = await store.list_runs(statuses=(RunStatus.QUEUED,), dispatched_only=True)
    assert [r.delivery_id for r in queued] == ["a"]
    assert [r.delivery_id for r in await store.list_runs(limit=2)] == ["a", "b"]


async def test_event_chain_is_linear_and_verifiable(store: Store, clock: FakeClock) -> None:
    result = await store.ingest(make_ingest(clock))
    assert result.ids
    appended = await asyncio.gather(
        *(
            store.append_event(
                NewEvent(kind="test.note", actor="test", payload={"n": n}, idea_id=result.ids.idea_id)
            )
            for n in range(20)
        )
    )
    events = await store.list_events()
    assert [e.seq for e in events] == list(range(1, 22))
    assert sorted(e.seq for e in appended) == list(range(2, 22))
    assert verify_chain(events) is None
    assert len(await store.list_events(idea_id=result.ids.idea_id)) == 21
    assert [e.seq for e in await store.list_events(after_seq=19)] == [20, 21]
    assert len(await store.list_events(limit=5)) == 5


async def test_event_payload_round_trips(store: Store) -> None:
    payload = {"text": "héllo {{workflow.name}}", "nested": {"list": [1, 2.5, None, True]}}
    event = await store.append_event(NewEvent(kind="test.payload", actor="someone", payload=payload))
    [stored] = await store.list_events()
    assert stored == event
    assert stored.payload == payload
    assert verify_chain([stored]) is None


async def test_concurrent_mixed_work_fails_only_where_it_should(store: Store, clock: FakeClock) -> None:
    """Concurrent operations (committed together by the SQL stores' group commit) each get their own
    outcome: duplicates within the same moment, shared ideas and tasks, a failing ingest and an unknown run
    leave the others intact and the audit chain linear."""
    first = await store.ingest(make_ingest(clock, delivery_id="seed", source_ref="acme/widgets#1"))
    assert first.ids

    def broken(_ids: IngestIds) -> IngestEffects:
        raise RuntimeError("effects failed")

    faulty = make_ingest(clock, delivery_id="faulty", source_ref="acme/widgets#9")
    work: list[Any] = []
    for n in range(30):
        ref = f"acme/widgets#{n % 4}"  # #1 exists; #0, #2, #3 are new, each named by several ingests
        work.append(store.ingest(make_ingest(clock, delivery_id=f"d-{n % 20}", source_ref=ref)))
    work.append(store.ingest(Ingest(**{**_fields(faulty), "effects": broken})))
    work.append(store.update_run(uuid.uuid4(), RunUpdate(status=RunStatus.FAILED), None))
    work.append(
        store.update_run(
            first.ids.run_id,
            RunUpdate(status=RunStatus.SUBMITTED, expected=(RunStatus.QUEUED,)),
            NewEvent(kind="run.submitted", actor="test", payload={}, run_id=first.ids.run_id),
        )
    )
    outcomes = await asyncio.gather(*work, return_exceptions=True)

    ingests = [o for o in outcomes[:30] if isinstance(o, IngestResult)]
    assert len(ingests) == 30, outcomes[:30]
    originals = [o for o in ingests if not o.duplicate]
    assert sorted(o.response["runId"] for o in originals) == sorted({o.response["runId"] for o in ingests})
    assert len(originals) == 20  # d-0 … d-19, the second of each pair a duplicate with the same answer
    by_ref: dict[uuid.UUID, int] = {}
    for o in originals:
        assert o.ids
        by_ref[o.ids.idea_id] = by_ref.get(o.ids.idea_id, 0) + int(o.ids.idea_created)
    assert len(by_ref) == 4
    assert by_ref[first.ids.idea_id] == 0
    assert sorted(by_ref.values()) == [0, 1, 1, 1]  # each new issue created exactly once
    assert isinstance(outcomes[30], RuntimeError)
    assert isinstance(outcomes[31], NotFound)
    submitted = outcomes[32]
    assert not isinstance(submitted, BaseException)
    assert submitted is not None
    assert submitted.status is RunStatus.SUBMITTED

    assert await store.find_delivery("codex_task", "faulty") is None
    runs = await store.list_runs(limit=1000)
    assert len(runs) == 21
    assert len({(r.idea_id, r.task_id) for r in runs}) == 4  # one planning task per idea
    events = await store.list_events()
    assert verify_chain(events) is None
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(1 for e in events if e.kind == "test.ingested") == 21
    assert sum(1 for e in events if e.kind == "run.submitted") == 1


async def test_concurrent_work_without_failures_is_done_in_set_form(store: Store, clock: FakeClock) -> None:
    """The same as above with nothing failing, so that the SQL stores' set forms (ingests and run updates
    of one batch together) are what records it."""
    seeded = [await store.ingest(make_ingest(clock, delivery_id=f"seed-{n}")) for n in range(6)]
    work: list[Any] = [
        store.ingest(make_ingest(clock, delivery_id=f"d-{n % 15}", source_ref=f"acme/widgets#{n % 3}"))
        for n in range(24)
    ]
    for n, seed in enumerate(seeded):
        assert seed.ids
        run_id = seed.ids.run_id
        expected = (RunStatus.QUEUED,) if n % 2 == 0 else (RunStatus.RUNNING,)  # odd ones do not apply
        work.append(
            store.update_run(
                run_id,
                RunUpdate(status=RunStatus.SUBMITTED, expected=expected, submitted_at=clock.now()),
                NewEvent(kind="run.submitted", actor="test", payload={"n": n}, run_id=run_id),
            )
        )
    outcomes = await asyncio.gather(*work)
    ingests = [o for o in outcomes[:24] if isinstance(o, IngestResult)]
    assert len(ingests) == 24
    assert sum(1 for o in ingests if not o.duplicate) == 15
    for n in range(24):  # a repeated delivery id answers what its first delivery answered
        assert ingests[n].response == ingests[n % 15].response
    originals = [o.ids for o in ingests if o.ids is not None]
    assert len({ids.idea_id for ids in originals}) == 3  # acme/widgets#0, #1, #2: new, shared by several
    created = [ids.idea_id for ids in originals if ids.idea_created]
    assert sorted(map(str, created)) == sorted({str(ids.idea_id) for ids in originals})  # once per idea
    assert len({ids.task_id for ids in originals}) == 3
    updates = outcomes[24:]
    assert [u is not None for u in updates] == [True, False, True, False, True, False]
    assert all(u.status is RunStatus.SUBMITTED for u in updates if u is not None)
    events = await store.list_events()
    assert verify_chain(events) is None
    assert sum(1 for e in events if e.kind == "run.submitted") == 3
    assert sum(1 for e in events if e.kind == "test.ingested") == 6 + 15
    runs = await store.list_runs(limit=1000)
    assert len(runs) == 21
    assert sorted(r.status.value for r in runs).count("submitted") == 3


async def test_chain_head_follows_the_last_event(store: Store) -> None:
    from facteur.domain.events import GENESIS_HASH

    assert await store.chain_head() == (0, GENESIS_HASH)
    first = await store.append_event(NewEvent(kind="a", actor="t", payload={}))
    second = await store.append_event(NewEvent(kind="b", actor="t", payload={"x": 1}))
    assert await store.chain_head() == (second.seq, second.hash)
    assert second.prev_hash == first.hash


async def test_list_runs_finished_after_keeps_the_runs_that_ended_since(
    store: Store, clock: FakeClock
) -> None:
    ended = []
    for number in range(3):
        result = await store.ingest(
            make_ingest(clock, delivery_id=f"d-{number}", source_ref=f"acme/w#{number}")
        )
        assert result.ids is not None
        await store.update_run(
            result.ids.run_id,
            RunUpdate(status=RunStatus.CANCELLED, finished_at=clock.now()),
            None,
        )
        ended.append(result.ids.run_id)
        clock.advance(60)
    live = await store.ingest(make_ingest(clock, delivery_id="d-live", source_ref="acme/w#9"))
    assert live.ids is not None
    since = clock.now() - timedelta(seconds=120)  # ended at +0, +60, +120; now is +180
    found = await store.list_runs(statuses=(RunStatus.CANCELLED,), finished_after=since)
    assert [run.id for run in found] == ended[1:]
    assert await store.list_runs(finished_after=clock.now()) == []
