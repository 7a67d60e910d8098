"""JSON errors: every failure answers ``{error, detail}`` with the right status; bad input is never a 500."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from facteur.domain.lifecycle import IllegalTransition
from facteur.domain.plans import InvalidPlan
from facteur.errors import Conflict, FacteurError, ForgeError, InvalidInput, NotFound, StoreUnavailable

logger = logging.getLogger(__name__)


_ERRORS = {
    400: "bad request",
    401: "unauthorized",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
}


def json_response(body: Any, status: int) -> Response:
    """Compact JSON, written directly (the plain Starlette routes of the hot paths)."""
    return Response(json.dumps(body, separators=(",", ":")).encode(), status, media_type="application/json")


def error_response(status: int, error: str, detail: str | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(InvalidInput)
    async def _invalid(_request: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(400, "invalid payload", exc.message)

    @app.exception_handler(InvalidPlan)
    async def _invalid_plan(_request: Request, exc: InvalidPlan) -> JSONResponse:
        body = {"error": "invalid plan", "detail": "; ".join(exc.problems), "problems": list(exc.problems)}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not found", exc.message)

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, "conflict", exc.message)

    @app.exception_handler(IllegalTransition)
    async def _illegal(_request: Request, exc: IllegalTransition) -> JSONResponse:
        return error_response(409, "conflict", exc.message)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        logger.warning("request failed, store unavailable: error=%s", exc.message)
        return error_response(503, "store unavailable", exc.message)

    @app.exception_handler(ForgeError)
    async def _forge(_request: Request, exc: ForgeError) -> JSONResponse:
        # nothing was recorded: a redelivery tries again
        logger.warning("request failed, forge error: error=%s", exc.message)
        return error_response(502, "forge unavailable", exc.message)

    @app.exception_handler(FacteurError)
    async def _facteur(_request: Request, exc: FacteurError) -> JSONResponse:
        logger.error("request failed: error=%s", exc.message)
        return error_response(500, "internal error", exc.message)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, _ERRORS.get(exc.status_code, "http error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return error_response(400, "invalid request", problems)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "internal error", "an unexpected error occurred; see the server log")
