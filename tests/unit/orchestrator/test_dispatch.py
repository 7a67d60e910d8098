"""Dispatch on the in-memory store: submission, retries and status reports."""

from __future__ import annotations

import json
import uuid

import pytest

from facteur.domain.events import verify_chain
from facteur.domain.runs import RunStatus
from facteur.executors.none import NoneExecutor
from facteur.executors.port import WorkflowPhase, WorkflowStatus
from facteur.orchestrator.dispatch import Dispatcher
from facteur.store.memory import MemoryStore
from facteur.store.port import RunUpdate
from tests.contract.test_store import make_ingest
from tests.support.app import FlakyExecutor
from tests.support.fakes import FakeClock


async def recorded_run(store: MemoryStore, clock: FakeClock, executor: str | None = "none") -> uuid.UUID:
    result = await store.ingest(make_ingest(clock, executor=executor))
    assert result.ids is not None
    return result.ids.run_id


async def test_dispatch_submits_and_marks_submitted(clock: FakeClock) -> None:
    store, executor = MemoryStore(clock), NoneExecutor()
    run_id = await recorded_run(store, clock)
    run = await Dispatcher(store, executor, clock).dispatch(run_id)
    assert run is not None
    assert run.status is RunStatus.SUBMITTED
    [request] = executor.submitted.values()
    event = json.loads(request.event_body)
    assert event["facteur"]["runId"] == str(run_id)
    assert event["stage"] == "planning"


async def test_dispatch_leaves_runs_that_are_not_queued_alone(clock: FakeClock) -> None:
    store, executor = MemoryStore(clock), NoneExecutor()
    run_id = await recorded_run(store, clock)
    await store.update_run(run_id, RunUpdate(status=RunStatus.CANCELLED), None)
    run = await Dispatcher(store, executor, clock).dispatch(run_id)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    assert executor.submitted == {}


async def test_submission_noted_even_when_the_run_already_started(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    run_id = await recorded_run(store, clock)

    class StartsAtOnce(NoneExecutor):
        async def submit(self, request):  # type: ignore[no-untyped-def]
            submission = await super().submit(request)
            await dispatcher.on_workflow_status(
                str(request.run_id), WorkflowStatus(phase=WorkflowPhase.RUNNING)
            )
            return submission

    dispatcher = Dispatcher(store, StartsAtOnce(), clock)
    run = await dispatcher.dispatch(run_id)
    assert run is not None
    assert run.status is RunStatus.RUNNING
    kinds = [e.kind for e in await store.list_events(run_id=run_id)]
    assert kinds == ["test.ingested", "run.started", "run.submitted"]


async def test_failed_submissions_are_retried_by_the_sweep(clock: FakeClock) -> None:
    store, executor = MemoryStore(clock), FlakyExecutor(failures=2)
    dispatcher = Dispatcher(store, executor, clock)
    run_id = await recorded_run(store, clock)
    assert await dispatcher.dispatch(run_id) is None
    assert await dispatcher.resubmit_pending() == 0
    assert await dispatcher.resubmit_pending() == 1
    assert (await store.get_run(run_id)).status is RunStatus.SUBMITTED
    kinds = [e.kind for e in await store.list_events(run_id=run_id)]
    assert kinds == ["test.ingested", "run.submit_failed", "run.submit_failed", "run.submitted"]
    assert verify_chain(await store.list_events()) is None


async def test_sweep_skips_runs_of_another_executor_and_undispatched_runs(clock: FakeClock) -> None:
    store, executor = MemoryStore(clock), NoneExecutor()
    await recorded_run(store, clock, executor="argo")
    await store.ingest(make_ingest(clock, delivery_id="d-2", executor=None))
    assert await Dispatcher(store, executor, clock).resubmit_pending() == 0
    assert executor.submitted == {}


@pytest.mark.parametrize(
    ("phase", "status", "kind"),
    [
        (WorkflowPhase.RUNNING, RunStatus.RUNNING, "run.started"),
        (WorkflowPhase.SUCCEEDED, RunStatus.SUCCEEDED, "run.succeeded"),
        (WorkflowPhase.FAILED, RunStatus.FAILED, "run.failed"),
        (WorkflowPhase.CANCELLED, RunStatus.CANCELLED, "run.cancelled"),
        (WorkflowPhase.LOST, RunStatus.LOST, "run.lost"),
        (WorkflowPhase.NOT_FOUND, RunStatus.LOST, "run.lost"),
    ],
)
async def test_status_reports_move_the_run(
    clock: FakeClock, phase: WorkflowPhase, status: RunStatus, kind: str
) -> None:
    store = MemoryStore(clock)
    dispatcher = Dispatcher(store, NoneExecutor(), clock)
    run_id = await recorded_run(store, clock)
    await dispatcher.dispatch(run_id)
    clock.advance(2)
    await dispatcher.on_workflow_status(
        str(run_id), WorkflowStatus(phase=phase, message="m", details={"pid": "1"})
    )
    run = await store.get_run(run_id)
    assert run.status is status
    assert (run.finished_at == clock.now()) is status.terminal
    last = (await store.list_events(run_id=run_id))[-1]
    assert last.kind == kind
    assert last.payload == {"phase": phase.value, "pid": "1", "message": "m"}


async def test_a_finished_run_ignores_late_reports(clock: FakeClock) -> None:
    store = MemoryStore(clock)
    dispatcher = Dispatcher(store, NoneExecutor(), clock)
    run_id = await recorded_run(store, clock)
    await dispatcher.on_workflow_status(str(run_id), WorkflowStatus(phase=WorkflowPhase.SUCCEEDED))
    await dispatcher.on_workflow_status(str(run_id), WorkflowStatus(phase=WorkflowPhase.RUNNING))
    await dispatcher.on_workflow_status(str(run_id), WorkflowStatus(phase=WorkflowPhase.FAILED))
    assert (await store.get_run(run_id)).status is RunStatus.SUCCEEDED
    assert [e.kind for e in await store.list_events(run_id=run_id)] == ["test.ingested", "run.succeeded"]


async def test_refresh_asks_the_executor(clock: FakeClock) -> None:
    store, executor = MemoryStore(clock), NoneExecutor()
    dispatcher = Dispatcher(store, executor, clock)
    run_id = await recorded_run(store, clock)
    run = await dispatcher.dispatch(run_id)
    assert run is not None
    status = await dispatcher.refresh(run)
    assert status is not None
    assert status.phase is WorkflowPhase.PENDING
    assert (await store.get_run(run_id)).status is RunStatus.SUBMITTED
