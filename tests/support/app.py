"""Run the application in-process with its lifespan, and talk to it over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from facteur.app import create_app
from facteur.clock import Clock, Ids
from facteur.errors import ExecutorUnavailable
from facteur.executors.none import NoneExecutor
from facteur.executors.port import Executor, Submission, WorkflowRequest
from facteur.forge.port import Forge
from facteur.runtime import Runtime, build_runtime
from facteur.settings import Settings
from facteur.store.port import Store


@dataclass
class Running:
    client: httpx.AsyncClient
    runtime: Runtime


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ids: Ids | None = None,
    store: Store | None = None,
    executor: Executor | None = None,
    forge: Forge | None = None,
) -> AsyncIterator[Running]:
    async def factory(s: Settings) -> Runtime:
        return await build_runtime(s, clock=clock, ids=ids, store=store, executor=executor, forge=forge)

    app = create_app(settings, runtime_factory=factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://facteur.test") as client:
            yield Running(client, app.state.runtime)


class FlakyExecutor(NoneExecutor):
    """The none executor, unreachable for the first ``failures`` submissions."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def submit(self, request: WorkflowRequest) -> Submission:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ExecutorUnavailable(
                "cannot create workflow: Kubernetes API unreachable: connection refused"
            )
        return await super().submit(request)
