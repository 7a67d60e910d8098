"""``POST /webhooks/{provider}``: GitHub (HMAC-SHA256 signed) and Discord (Ed25519 signed) deliveries.

Plain Starlette routes: the endpoints need the raw body (signatures cover its exact bytes)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from facteur.api.codex_tasks import read_body
from facteur.api.errors import error_response, json_response
from facteur.errors import InvalidInput
from facteur.intake.github_delivery import SIGNATURE_HEADER, parse_delivery, signature_valid
from facteur.runtime import Runtime

#: Discord interactions are small; Discord's own limit is far below this
DISCORD_MAX_BODY_BYTES = 1024 * 1024


async def post_webhook(request: Request) -> Response:
    provider = request.path_params["provider"]
    if provider == "github":
        return await github_webhook(request)
    if provider == "discord":
        return await discord_webhook(request)
    return error_response(400, "unsupported provider", f"Provider '{provider}' not supported")


async def github_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings.github
    if settings.webhook_secret is None:
        return error_response(
            503,
            "not configured",
            "github.webhook_secret (GITHUB_WEBHOOK_SECRET) is not set: deliveries refused",
        )
    limit = settings.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        return error_response(413, "payload too large", f"the body exceeds github.max_body_bytes ({limit})")
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return error_response(401, "unauthorized", "missing X-Hub-Signature-256 header")
    if not signature_valid(settings.webhook_secret.get_secret_value(), body, signature):
        return error_response(401, "unauthorized", "X-Hub-Signature-256 does not match the body")
    try:
        delivery = parse_delivery(body, request.headers, fallback_id=str(uuid.uuid4()))
    except InvalidInput as exc:
        return error_response(400, "invalid payload", exc.message)
    not_ready = runtime.not_ready_reason()
    if not_ready is not None:
        return error_response(503, "store unavailable", not_ready)
    answer = await runtime.github.receive(delivery)
    return json_response(answer.body, 202)


async def discord_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await read_body(request, DISCORD_MAX_BODY_BYTES)
    if body is None:
        return error_response(413, "payload too large", f"the body exceeds {DISCORD_MAX_BODY_BYTES} bytes")
    not_ready = runtime.not_ready_reason()
    if not_ready is not None:
        return error_response(503, "store unavailable", not_ready)
    answer = await runtime.discord.handle(body, request.headers)
    return json_response(answer.body, answer.status)


route = Route("/webhooks/{provider}", post_webhook, methods=["POST"])
