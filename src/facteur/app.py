"""The web application factory: one FastAPI app, one lifespan that opens and closes the runtime."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from facteur import __version__
from facteur.api import codex_tasks, control, errors, health, ideas, runs, webhooks
from facteur.runtime import Runtime, build_runtime
from facteur.settings import Settings

RuntimeFactory = Callable[[Settings], Awaitable[Runtime]]


def create_app(
    settings: Settings,
    *,
    runtime_factory: RuntimeFactory | None = None,
    freeze_gc: bool = False,
    config_path: Path | None = None,
) -> FastAPI:
    """The HTTP application; ``runtime_factory`` lets tests supply their own adapters; ``freeze_gc`` (for
    ``facteur serve``, one app per process) moves what start-up built out of the garbage collector's way;
    ``config_path`` is the settings' file (local stage runs read it too)."""
    factory = runtime_factory or functools.partial(build_runtime, config_path=config_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await factory(settings)
        app.state.runtime = runtime
        try:
            await runtime.start()
            # what start-up built lives as long as the process: keep it out of the collector's full passes,
            # whose pauses would otherwise grow with it and show in the latency of requests
            if freeze_gc:
                gc.collect()
                gc.freeze()
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="Facteur",
        version=__version__,
        description="Self-hosted autonomous delivery system for coding agents.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(ideas.router)
    app.include_router(control.router)
    app.router.routes.append(codex_tasks.route)
    app.router.routes.append(webhooks.route)
    app.router.routes.append(runs.route)
    return app
