"""``POST /api/v1/runs/{id}/events``: a stage run reports about itself.

Authorised by the run's own token (HMAC of its id under the callback secret, handed to the run) or by the
admin token (``server.api_token``), as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import uuid

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from facteur.api.auth import bearer, is_api_token
from facteur.api.codex_tasks import read_body
from facteur.api.errors import error_response, json_response
from facteur.domain.run_reports import parse_report, token_matches
from facteur.errors import InvalidInput, NotFound
from facteur.runtime import Runtime


async def post_run_event(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    raw_id = request.path_params["run_id"]
    try:
        run_id = uuid.UUID(raw_id)
    except ValueError:
        return error_response(404, "not found", f"no run {raw_id!r}: run ids are UUIDs")
    token = bearer(request)
    if token is None:
        return error_response(401, "unauthorized", "send Authorization: Bearer <the run's token>")
    if not is_api_token(runtime.settings, token) and not token_matches(
        runtime.callback_secret, run_id, token
    ):
        return error_response(401, "unauthorized", "the token is neither this run's token nor the API token")
    limit = runtime.settings.server.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        return error_response(413, "payload too large", f"the body exceeds server.max_body_bytes ({limit})")
    try:
        event = parse_report(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        return error_response(400, "invalid payload", f"the body is not JSON: {exc}")
    except InvalidInput as exc:
        return error_response(400, "invalid payload", exc.message)
    not_ready = runtime.not_ready_reason()
    if not_ready is not None:
        return error_response(503, "store unavailable", not_ready)
    try:
        answer = await runtime.run_reports.receive(run_id, event)
    except NotFound:
        return error_response(404, "not found", f"no run {run_id}")
    return json_response(answer.body, answer.status)


route = Route("/api/v1/runs/{run_id}/events", post_run_event, methods=["POST"])
