"""The Store contract for what runs report: once per (run, key), status only forward, usage summed on the
run and its idea, plan versions numbered, unknown runs refused without a trace."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from facteur.domain.events import NewEvent, verify_chain
from facteur.domain.runs import RunStatus
from facteur.errors import NotFound
from facteur.store.port import IngestEffects, PlanVersionDraft, ReportOutcome, RunReport, Store
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock


async def a_run(store: Store, clock: FakeClock) -> uuid.UUID:
    result = await store.ingest(make_ingest(clock, delivery_id=f"d-{uuid.uuid4()}"))
    assert result.ids is not None
    return result.ids.run_id


def report(run_id: uuid.UUID, key: str, clock: FakeClock, **fields: object) -> RunReport:
    def effects(outcome: ReportOutcome) -> IngestEffects:
        return IngestEffects(
            response={"status": outcome.run.status.value, "changed": outcome.status_changed},
            events=[NewEvent(kind=f"run.{key}", actor="test", payload={}, run_id=run_id)],
        )

    return RunReport(run_id=run_id, key=key, received_at=clock.now(), effects=effects, **fields)  # type: ignore[arg-type]


async def test_reports_apply_once_and_move_forward(store: Store, clock: FakeClock) -> None:
    run_id = await a_run(store, clock)
    started = await store.report_run(
        report(run_id, "e1", clock, status=RunStatus.RUNNING, started=True, heartbeat=True)
    )
    assert not started.duplicate and started.response == {"status": "running", "changed": True}
    first_start = (await store.get_run(run_id)).started_at
    assert first_start == clock.now()

    clock.advance(5)
    again = await store.report_run(report(run_id, "e1", clock, status=RunStatus.FAILED))
    assert again.duplicate and again.response == {"status": "running", "changed": True}
    assert (await store.get_run(run_id)).status is RunStatus.RUNNING

    await store.report_run(report(run_id, "u1", clock, tokens_in=100, tokens_out=20, cost_usd=0.5))
    await store.report_run(report(run_id, "u2", clock, tokens_in=1, tokens_out=2, cost_usd=0.25))
    done = await store.report_run(
        report(
            run_id,
            "c1",
            clock,
            status=RunStatus.SUCCEEDED,
            summary="all green",
            artifacts=[{"name": "patch", "path": "a.patch"}],
            pull_request="https://github.com/acme/widgets/pull/3",
            branch="codex/issue-7-abc",
        )
    )
    assert done.outcome is not None and done.outcome.status_changed
    run = await store.get_run(run_id)
    assert (run.status, run.finished_at, run.summary, run.branch) == (
        RunStatus.SUCCEEDED,
        clock.now(),
        "all green",
        "codex/issue-7-abc",
    )
    assert run.artifacts == [{"name": "patch", "path": "a.patch"}]
    assert (run.tokens_in, run.tokens_out, run.cost_usd) == (101, 22, 0.75)
    idea = await store.get_idea(run.idea_id)
    assert (idea.tokens_in, idea.tokens_out, idea.cost_usd) == (101, 22, 0.75)

    # out of order: a late heartbeat and a late start change no status and no start time
    clock.advance(-60)
    late = await store.report_run(
        report(run_id, "h0", clock, status=RunStatus.RUNNING, started=True, heartbeat=True)
    )
    assert late.outcome is not None and not late.outcome.status_changed
    run = await store.get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert run.started_at == first_start
    assert run.heartbeat_at == first_start  # never moves back
    events = await store.list_events(run_id=run_id)
    assert [e.kind for e in events if e.kind.startswith("run.")] == [
        "run.e1",
        "run.u1",
        "run.u2",
        "run.c1",
        "run.h0",
    ]
    assert verify_chain(await store.list_events()) is None


async def test_plans_are_numbered_per_idea(store: Store, clock: FakeClock) -> None:
    run_id = await a_run(store, clock)
    draft = PlanVersionDraft(source="run", markdown="<!-- codex:plan -->\n# v", document={"tasks": []})
    first = await store.report_run(report(run_id, "p1", clock, plan=draft))
    clock.advance(timedelta(seconds=1).total_seconds())
    second = await store.report_run(report(run_id, "p2", clock, plan=draft))
    assert first.outcome is not None and second.outcome is not None
    assert (first.outcome.plan_version, second.outcome.plan_version) == (1, 2)
    run = await store.get_run(run_id)
    versions = await store.list_plans(run.idea_id)
    assert [(p.version, p.source, p.document) for p in versions] == [
        (1, "run", {"tasks": []}),
        (2, "run", {"tasks": []}),
    ]


async def test_an_unknown_run_is_refused_without_a_trace(store: Store, clock: FakeClock) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound):
        await store.report_run(report(missing, "e1", clock, heartbeat=True))
    run_id = await a_run(store, clock)
    # the key was not taken by the refusal
    assert not (await store.report_run(report(run_id, "e1", clock, heartbeat=True))).duplicate
    assert [e.kind for e in await store.list_events() if e.kind.startswith("run.")] == ["run.e1"]


async def test_concurrent_copies_of_a_report_apply_once(store: Store, clock: FakeClock) -> None:
    run_id = await a_run(store, clock)
    results = await asyncio.gather(
        *(store.report_run(report(run_id, "u", clock, tokens_in=10)) for _ in range(6))
    )
    assert sum(not r.duplicate for r in results) == 1
    assert (await store.get_run(run_id)).tokens_in == 10
