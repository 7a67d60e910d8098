"""Bearer tokens of ``/api``: the admin token (``server.api_token``) and, for run events, a run's own."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from facteur.settings import Settings


def bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_api_token(settings: Settings, token: str | None) -> bool:
    """Whether ``token`` is ``server.api_token`` (compared in constant time); False when none is set."""
    admin = settings.server.api_token
    if admin is None or token is None:
        return False
    return hmac.compare_digest(admin.get_secret_value().encode(), token.encode("utf-8", "replace"))
