"""Two replicas on one PostgreSQL (issue #5 §3): under load they never dispatch a run twice nor exceed the
limits together, and a dead replica's claims are taken over."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from facteur.domain.ideas import IdeaState
from facteur.domain.run_reports import parse_report
from facteur.errors import ExecutorUnavailable
from facteur.executors.none import NoneExecutor
from facteur.executors.port import Submission, WorkflowRequest
from facteur.orchestrator.ideas import Submission as IdeaSubmission
from facteur.runtime import Runtime, build_runtime
from facteur.settings import Settings, load_settings

MAX_CONCURRENT = 4
MAX_PER_REPOSITORY = 3


class CountingExecutor(NoneExecutor):
    """Shared by both replicas: counts submissions per run and the runs in flight at each submission."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.in_flight: set[str] = set()
        self.by_repository: Counter[str] = Counter()
        self.peak = 0
        self.peak_repository = 0
        self.queue: asyncio.Queue[WorkflowRequest] = asyncio.Queue()
        self.down = False

    async def submit(self, request: WorkflowRequest) -> Submission:
        if self.down:
            raise ExecutorUnavailable("the executor is down")
        key = str(request.run_id)
        self.calls[key] += 1
        submission = await super().submit(request)
        if submission.created:
            self.in_flight.add(key)
            self.by_repository[request.repository] += 1
            self.peak = max(self.peak, len(self.in_flight))
            self.peak_repository = max(self.peak_repository, self.by_repository[request.repository])
            await self.queue.put(request)
        return submission

    def finished(self, request: WorkflowRequest) -> None:
        self.in_flight.discard(str(request.run_id))
        self.by_repository[request.repository] -= 1


def settings_for(url: str, **env: str) -> Settings:
    return load_settings(
        environ={
            "FACTEUR_DATABASE__URL": url,
            "FACTEUR_BUS__OUTBOX__RELAY_ENABLED": "false",
            "FACTEUR_SCHEDULER__MAX_CONCURRENT": str(MAX_CONCURRENT),
            "FACTEUR_SCHEDULER__MAX_PER_REPOSITORY": str(MAX_PER_REPOSITORY),
            "FACTEUR_SCHEDULER__POLL_SECONDS": "0.2",
            **env,
        }
    )


@asynccontextmanager
async def replicas(
    settings: Settings, executor: NoneExecutor, count: int = 2
) -> AsyncIterator[list[Runtime]]:
    async with AsyncExitStack() as stack:
        started: list[Runtime] = []
        for _ in range(count):  # one after the other: the first migrates the database
            runtime = await build_runtime(settings, executor=executor)
            stack.push_async_callback(runtime.close)
            await runtime.start()
            started.append(runtime)
        yield started


def plan(rng: random.Random, size: int) -> dict[str, Any]:
    tasks = []
    for index in range(size):
        earlier = [f"t{i}" for i in range(index)]
        deps = rng.sample(earlier, k=min(len(earlier), rng.randint(0, 2)))
        tasks.append(
            {"key": f"t{index}", "title": f"T{index}", "depends_on": deps, "acceptance_criteria": ["ok"]}
        )
    return {"tasks": tasks}


async def test_two_replicas_dispatch_every_run_once_within_the_limits(pg_url: str) -> None:
    rng = random.Random(5)
    executor = CountingExecutor()
    ideas, tasks_per_idea = 24, 5
    async with replicas(settings_for(pg_url), executor) as (first, second):
        submitted = []
        for number in range(ideas):
            result = await first.ideas.submit(
                IdeaSubmission(
                    title=f"idea {number}",
                    goal="done",
                    repository=f"acme/repo-{number % 3}",
                    priority=rng.randint(0, 3),
                    plan_json=plan(rng, tasks_per_idea),
                )
            )
            submitted.append(result.detail.idea.id)
        # play the stage runners: each dispatched run reports its end to either replica at random
        completed = 0
        while completed < ideas * tasks_per_idea:
            request = await asyncio.wait_for(executor.queue.get(), timeout=30)
            await asyncio.sleep(rng.random() * 0.01)
            executor.finished(request)
            receiver = rng.choice([first, second])
            event = parse_report({"id": "end", "type": "completed", "outcome": "succeeded"})
            answer = await receiver.run_reports.receive(request.run_id, event)
            assert answer.status == 202, answer.body
            completed += 1

        async def all_completed() -> None:
            while True:
                states = {(await first.store.get_idea(i)).state for i in submitted}
                if states == {IdeaState.COMPLETED}:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_completed(), timeout=30)
        assert set(executor.calls.values()) == {1}, "a run was submitted twice"
        assert len(executor.calls) == ideas * tasks_per_idea
        assert executor.peak <= MAX_CONCURRENT and executor.peak_repository <= MAX_PER_REPOSITORY
        assert first.scheduler.dispatched > 0 and second.scheduler.dispatched > 0
        assert first.scheduler.dispatched + second.scheduler.dispatched == ideas * tasks_per_idea


async def test_a_dead_replicas_claims_are_taken_over(pg_url: str) -> None:
    executor = CountingExecutor()
    settings = settings_for(
        pg_url, FACTEUR_SCHEDULER__CLAIM_SECONDS="1", FACTEUR_SCHEDULER__RECONCILE_SECONDS="0.2"
    )
    # its scheduler is driven by hand: one pass, then it dies
    dying_settings = settings_for(
        pg_url, FACTEUR_SCHEDULER__ENABLED="false", FACTEUR_SCHEDULER__CLAIM_SECONDS="1"
    )
    dying = await build_runtime(dying_settings, executor=executor)
    await dying.start()
    try:
        executor.down = True  # the claim is made, the submission fails, then the replica dies
        await dying.ideas.submit(
            IdeaSubmission(
                title="orphan", goal="done", repository="acme/widgets", plan_json=plan(random.Random(1), 1)
            )
        )
        result = await dying.scheduler.pass_once()
        assert (result.claimed, result.submitted) == (1, 0)
    finally:
        await dying.close()
    executor.down = False
    async with replicas(settings, executor, count=1) as (survivor,):
        request = await asyncio.wait_for(executor.queue.get(), timeout=15)
        run = await survivor.store.get_run(request.run_id)
        task = await survivor.store.get_task(run.task_id)
        assert task.claimed_by == survivor.scheduler.holder
        assert executor.calls[str(run.id)] == 1 and run.attempt == 1


pytestmark = pytest.mark.postgres
