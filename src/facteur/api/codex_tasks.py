"""``POST /codex/tasks``: a binary ``CodexTask`` (any content type) or proto-JSON (``application/json``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from facteur.api.errors import error_response, json_response
from facteur.errors import InvalidInput
from facteur.runtime import Runtime


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def post_codex_task(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    limit = runtime.settings.server.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        return error_response(413, "payload too large", f"the body exceeds server.max_body_bytes ({limit})")
    if not body:
        return error_response(400, "empty payload", "the body must be a CodexTask (protobuf or proto-JSON)")
    try:
        accepted = runtime.intake.decode(body, request.headers.get("content-type"))
    except InvalidInput as exc:
        return error_response(400, "invalid payload", exc.message)
    not_ready = runtime.not_ready_reason()
    if not_ready is not None:
        return error_response(503, "store unavailable", not_ready)
    answer = await runtime.intake.receive(accepted, body)
    return json_response(answer.body, 202)


#: a plain Starlette route: the endpoint reads the raw body and writes its own JSON, so FastAPI's request
#: handling (dependency solving, response serialisation) would only add cost on the hottest path
route = Route("/codex/tasks", post_codex_task, methods=["POST"])
