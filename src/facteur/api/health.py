"""Service identity, liveness and readiness."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from facteur import __version__
from facteur.errors import StoreUnavailable
from facteur.runtime import Runtime

router = APIRouter()


@router.get("/")
async def identity() -> dict[str, str]:
    return {
        "service": "facteur",
        "status": "ok",
        "version": os.environ.get("FACTEUR_VERSION", __version__),
        "commit": os.environ.get("FACTEUR_COMMIT", "unknown"),
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    problem = runtime.not_ready_reason()
    if problem is None:
        try:
            await runtime.store.ping()
        except StoreUnavailable as exc:
            problem = exc.message
    if problem is not None:
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return JSONResponse({"status": "ready", "schema": runtime.schema_revision})
